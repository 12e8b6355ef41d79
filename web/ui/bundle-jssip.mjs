// Bundles JsSIP (npm `jssip`, CommonJS only: its npm package ships no browser build) and its three small
// dependencies into ONE classic script for the browser, `node_modules/.ccpbx-vendor/jssip.js`, which defines
// `window.JsSIP`. Run by `npm ci` / `npm install` (the `postinstall` script of package.json): no bundler, no
// network, nothing but the files npm installed from package-lock.json. web/pages.py serves the result from
// /static/vendor/jssip.js.
//
// How: every module reachable from jssip/lib/JsSIP.js through `require('<literal>')` is wrapped in a function
// (module, exports, require) keyed by its path; bare names resolve through the package's `browser` field (a
// string) or `main`, as browserify does. JSON files are inlined. Anything else (a dynamic require, a Node
// built-in) fails the build loudly.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const modulesDir = path.join(here, 'node_modules');
const outDir = path.join(modulesDir, '.ccpbx-vendor');
const entry = path.join(modulesDir, 'jssip', 'lib', 'JsSIP.js');

function asFile(p) {
  for (const candidate of [p, `${p}.js`, `${p}.json`, path.join(p, 'index.js')]) {
    if (fs.existsSync(candidate) && fs.statSync(candidate).isFile()) return candidate;
  }
  return null;
}

function resolve(spec, fromFile) {
  if (spec.startsWith('./') || spec.startsWith('../')) {
    const found = asFile(path.resolve(path.dirname(fromFile), spec));
    if (!found) throw new Error(`${fromFile}: cannot resolve ${spec}`);
    return found;
  }
  const pkgDir = path.join(modulesDir, spec);
  const pkgFile = path.join(pkgDir, 'package.json');
  if (!fs.existsSync(pkgFile)) throw new Error(`${fromFile}: package ${spec} is not installed`);
  const pkg = JSON.parse(fs.readFileSync(pkgFile, 'utf8'));
  const main = typeof pkg.browser === 'string' ? pkg.browser : (pkg.main || 'index.js');
  const found = asFile(path.join(pkgDir, main));
  if (!found) throw new Error(`${spec}: entry ${main} not found`);
  return found;
}

const REQUIRE = /\brequire\(\s*(['"])([^'"]+)\1\s*\)/g;
const ids = new Map(); // absolute file -> numeric id
const bodies = [];

function add(file) {
  if (ids.has(file)) return ids.get(file);
  const id = bodies.length;
  ids.set(file, id);
  bodies.push(null);
  const source = fs.readFileSync(file, 'utf8');
  if (file.endsWith('.json')) {
    const { name, version } = JSON.parse(source);
    bodies[id] = `module.exports = ${JSON.stringify({ name, version })};`;
    return id;
  }
  const map = {};
  for (const match of source.matchAll(REQUIRE)) map[match[2]] = add(resolve(match[2], file));
  bodies[id] = { source, map };
  return id;
}

add(entry);
const parts = bodies.map((b, id) => {
  const rel = path.relative(modulesDir, [...ids].find(([, v]) => v === id)[0]);
  if (typeof b === 'string') return `/* ${rel} */ ${id}: [function (module, exports, require) {\n${b}\n}, {}]`;
  return `/* ${rel} */ ${id}: [function (module, exports, require) {\n${b.source}\n}, ${JSON.stringify(b.map)}]`;
});
const versions = ['jssip', 'debug', 'ms', 'events', 'sdp-transform'].map((name) => {
  const pkg = JSON.parse(fs.readFileSync(path.join(modulesDir, name, 'package.json'), 'utf8'));
  return `${name} ${pkg.version} (${pkg.license})`;
}).join(', ');
const out = `/*! JsSIP bundled for the browser by web/ui/bundle-jssip.mjs from: ${versions} */
(function () {
  var defs = {
${parts.join(',\n')}
  };
  var cache = {};
  function load(id) {
    if (cache[id]) return cache[id].exports;
    var module = cache[id] = { exports: {} };
    var def = defs[id];
    def[0].call(module.exports, module, module.exports, function (spec) {
      if (!(spec in def[1])) throw new Error('jssip bundle: unknown module ' + spec);
      return load(def[1][spec]);
    });
    return module.exports;
  }
  window.JsSIP = load(0);
})();
`;
fs.mkdirSync(outDir, { recursive: true });
fs.writeFileSync(path.join(outDir, 'jssip.js'), out);
console.log(`jssip bundle: ${bodies.length} modules, ${out.length} bytes -> ${path.relative(here, outDir)}/jssip.js`);
