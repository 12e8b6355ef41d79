"""A taint check of the dialplan (asterisk-conf/extensions.conf): values from outside reach no sink unchecked.

What it proves, precisely (docs/security.md, "Dialplan"):

* **Sources** (untrusted): `${EXTEN}` of a pattern extension, every `${CALLERID(...)}` field, a variable set by
  `Read()` (DTMF), and *every* other variable the dialplan did not itself give a clean value to on the path
  being followed. That includes everything the FastAGI IVR sets (`IVR_*`), everything an AMI `Originate` or
  `Setvar` sets (`CB_*`, `REC_*`, `SPY_*`, ...), and anything a caller could smuggle in. Only
  `[globals]` constants and the status variables Asterisk itself sets after an application returns
  (`CLEAN_BUILTINS`) start clean. Dialplan functions other than the ones below are transparent (tainted when an
  argument is).
* **Sanitizers**: `${FILTER(chars,...)}` when its character set holds no `DANGEROUS` character; `${LEN()}` and
  `${REGEX()}` (they give numbers); a branch of `GotoIf`/`ExecIf`/`${IF()}` taken when
  `${REGEX("^...$" ${VAR})}` is true (alone or as a conjunct of `&`), which cleans `VAR` on that branch only,
  and only if the regex is anchored at both ends, has no alternation, no `.` wildcard, no negated class, and
  can match no `DANGEROUS` character (nor both `.` and `/`, which would allow `../`).
  `Set(V=<clean>)` cleans `V`; `Set(V=<tainted>)` taints it again (a check before a reassignment does not count).
* **Sinks**: the arguments of `Dial`, `Queue`, `MixMonitor`, `Playback`, `ChanSpy` (a channel name and options
  that can record to a file) and `UserEvent` (AMI headers the service parses).
* **Paths**: every extension of every context is an entry point with everything tainted (an AMI Originate can
  start a channel anywhere), and `Goto`/`GotoIf`/fall-through are followed across contexts with the variable
  state carried along, until `Hangup` or the end of the extension. Every (position, state) pair is explored
  once, so all paths through the static dialplan are covered.

What it does not prove: anything about `AGI()` arguments (they go to our own FastAGI server, which treats its
whole header as untrusted: tests/unit/test_fastagi*.py), applications outside the sink list, `#include`d
files (none are used), or what Asterisk's C code does with a clean value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

SINKS = frozenset({"dial", "queue", "mixmonitor", "playback", "chanspy", "userevent"})
#: Variables Asterisk sets itself when an application returns (status words), never from outside.
CLEAN_BUILTINS = frozenset({"QUEUESTATUS", "DIALSTATUS"})
#: Characters that may change what an application does with an argument: separators of arguments, dial
#: strings and options (`,` `&` `|` `@` `:`), expressions (`$` `{` `}` `[` `]` `(` `)`), quotes, escapes,
#: comments, wildcards, whitespace and control characters.
DANGEROUS = frozenset("&,|;$`{}()[]\\\"'@:=!*?~^<> \t\r\n\x00") | frozenset(chr(c) for c in range(32)) | {"\x7f"}


@dataclass(frozen=True)
class Step:
    context: str
    exten: str
    priority: int
    label: str | None
    app: str
    args: str
    line: int


@dataclass
class Dialplan:
    contexts: dict[str, dict[str, list[Step]]] = field(default_factory=dict)
    globals: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Violation:
    context: str
    exten: str
    priority: int
    line: int
    app: str
    tainted: frozenset[str]
    message: str

    def __str__(self) -> str:
        return (f"extensions.conf:{self.line} [{self.context}] {self.exten},{self.priority} {self.app}: "
                f"{self.message} ({', '.join(sorted(self.tainted))})")


@dataclass
class Report:
    violations: list[Violation] = field(default_factory=list)
    sink_sites: set[int] = field(default_factory=set)  # line numbers of sink calls that were checked
    sink_vars: set[str] = field(default_factory=set)  # variable names that appeared in sink arguments
    states: int = 0


# ------------------------------------------------------------------ parsing
def _strip_comment(line: str) -> str:
    out, i = [], 0
    while i < len(line):
        if line[i] == "\\" and i + 1 < len(line):
            out.append(line[i:i + 2])
            i += 2
            continue
        if line[i] == ";":
            break
        out.append(line[i])
        i += 1
    return "".join(out).strip()


def split_top(text: str, sep: str, maxsplit: int = -1) -> list[str]:
    """Split on `sep` outside (), {}, [] and double quotes."""
    parts: list[str] = []
    cur: list[str] = []
    depth, quoted, i = 0, False, 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i:i + 2])
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif not quoted:
            if c in "({[":
                depth += 1
            elif c in ")}]":
                depth -= 1
            elif c == sep and depth == 0 and (maxsplit < 0 or len(parts) < maxsplit):
                parts.append("".join(cur))
                cur = []
                i += 1
                continue
        cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def _app_call(text: str) -> tuple[str, str]:
    text = text.strip()
    m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?$", text, re.S)
    if not m:
        raise ValueError(f"cannot parse application call {text!r}")
    return m.group(1), m.group(2) or ""


def parse(text: str) -> Dialplan:
    plan = Dialplan()
    context: str | None = None
    last: tuple[str, int] | None = None  # (exten, priority) of the previous line in this context
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw)
        if not line:
            continue
        m = re.match(r"^\[([^\]]+)\]", line)
        if m:
            context, last = m.group(1), None
            if context not in ("general", "globals"):
                plan.contexts.setdefault(context, {})
            continue
        if context == "globals":
            plan.globals.add(line.split("=", 1)[0].strip())
            continue
        if context in (None, "general"):
            continue
        m = re.match(r"^(exten|same)\s*=>\s*(.*)$", line)
        if not m:
            if line.startswith(("include", "#include", "switch")):
                raise ValueError(f"line {lineno}: {line.split()[0]} is not supported by this check")
            continue
        assert context is not None
        kind, rest = m.groups()
        if kind == "exten":
            exten, prio_s, app_s = split_top(rest, ",", 2)
            exten = exten.strip()
        else:
            if last is None:
                raise ValueError(f"line {lineno}: 'same' without a preceding extension")
            exten = last[0]
            prio_s, app_s = split_top(rest, ",", 1)
        pm = re.match(r"^\s*(\d+|n)\s*(?:\(([^)]*)\))?\s*$", prio_s)
        if not pm:
            raise ValueError(f"line {lineno}: bad priority {prio_s!r}")
        if pm.group(1) == "n":
            if last is None or last[0] != exten:
                raise ValueError(f"line {lineno}: priority n without a previous priority")
            prio = last[1] + 1
        else:
            prio = int(pm.group(1))
        app, args = _app_call(app_s)
        plan.contexts[context].setdefault(exten, []).append(
            Step(context, exten, prio, pm.group(2), app, args, lineno))
        last = (exten, prio)
    for exts in plan.contexts.values():
        for steps in exts.values():
            steps.sort(key=lambda s: s.priority)
    return plan


# ------------------------------------------------------------------ expressions
def refs(text: str) -> Iterator[tuple[str, str]]:
    """Top-level `${...}` ("var") and `$[...]` ("expr") references of a string, with their inner text."""
    i = 0
    while i < len(text):
        if text.startswith("${", i) or text.startswith("$[", i):
            open_c, close_c = ("{", "}") if text[i + 1] == "{" else ("[", "]")
            depth, j = 0, i + 1
            while j < len(text):
                if text[j] == open_c:
                    depth += 1
                elif text[j] == close_c:
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            yield ("var" if open_c == "{" else "expr"), text[i + 2:j]
            i = j + 1
        else:
            i += 1


def _char_set(spec: str) -> set[str]:
    """Characters a FILTER() set or a bracket expression allows: ranges a-z, \\xHH escapes, literals."""
    chars: list[str] = []
    i = 0
    while i < len(spec):
        c = spec[i]
        if c == "\\" and i + 1 < len(spec):
            if spec[i + 1] == "x" and re.match(r"[0-9A-Fa-f]{2}", spec[i + 2:i + 4]):
                chars.append(chr(int(spec[i + 2:i + 4], 16)))
                i += 4
                continue
            chars.append(spec[i + 1])
            i += 2
            continue
        chars.append(c)
        i += 1
    out: set[str] = set()
    k = 0
    while k < len(chars):
        if k + 2 < len(chars) and chars[k + 1] == "-":
            out.update(chr(x) for x in range(ord(chars[k]), ord(chars[k + 2]) + 1))
            k += 3
        else:
            out.add(chars[k])
            k += 1
    return out


def safe_validator(regex: str) -> bool:
    """True if a string matching `regex` (POSIX ERE, as REGEX() uses) can hold no DANGEROUS character."""
    if not (regex.startswith("^") and regex.endswith("$")) or regex.endswith("\\$"):
        return False
    body, allowed, i = regex[1:-1], set(), 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            if i + 1 >= len(body):
                return False
            allowed.add(body[i + 1])
            i += 2
        elif c == "[":
            end = body.find("]", i + 2)
            if end < 0 or body[i + 1] == "^":
                return False
            allowed |= _char_set(body[i + 1:end])
            i = end + 1
        elif c == "{":
            end = body.find("}", i)
            if end < 0 or not re.fullmatch(r"\d+(,\d*)?", body[i + 1:end]):
                return False
            i = end + 1
        elif c in ".|":
            return False  # wildcard, or alternation that escapes the anchors
        elif c in "?*+()":
            i += 1
        else:
            allowed.add(c)
            i += 1
    return not (allowed & DANGEROUS) and not {".", "/"} <= allowed


def _var_name(inner: str) -> str:
    """`${NAME}` / `${NAME:1:2}` → NAME; `${CALLERID(num)}` → CALLERID(num)."""
    m = re.match(r"^(CALLERID)\((\w*)\)$", inner.strip(), re.I)
    if m:
        return f"CALLERID({m.group(2).lower()})"
    return inner.split(":", 1)[0].strip()


class Analyzer:
    def __init__(self, plan: Dialplan) -> None:
        self.plan = plan
        self.report = Report()

    # A state is the frozenset of names known clean on this path.
    def taint(self, text: str, clean: frozenset[str]) -> frozenset[str]:
        """Names of untrusted values that flow into `text` when Asterisk substitutes it."""
        found: set[str] = set()
        for kind, inner in refs(text):
            if kind == "expr":
                found |= self.taint(inner, clean)
                continue
            m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\((.*)\)$", inner.strip(), re.S)
            if m:
                func, argstr = m.group(1).upper(), m.group(2)
                if func == "FILTER":
                    chars = split_top(argstr, ",", 1)[0]
                    if _char_set(chars) & DANGEROUS:
                        found |= {f"FILTER({chars}) keeps unsafe characters of"} | self.taint(argstr, clean)
                elif func in ("LEN", "REGEX"):
                    pass
                elif func == "IF":
                    cond, branches = [*split_top(argstr, "?", 1), ""][:2]
                    then, other = [*split_top(branches, ":", 1), ""][:2]
                    found |= self.taint(then, self.refine(cond, clean))
                    found |= self.taint(other, clean)
                elif func == "CALLERID":
                    name = _var_name(inner)
                    if name not in clean:
                        found.add(name)
                elif func == "CHANNEL":
                    pass  # Asterisk's own view of the channel (linkedid, state...)
                else:
                    found |= self.taint(argstr, clean)
                continue
            name = _var_name(inner)
            if self._in_sink:
                self.report.sink_vars.add(name)
            if name not in clean:
                found.add(name)
        return frozenset(found)

    _in_sink = False

    def refine(self, cond: str, clean: frozenset[str]) -> frozenset[str]:
        """The clean set on the branch where `cond` is true."""
        cond = cond.strip()
        inner = [i for k, i in refs(cond) if k == "expr"]
        body = inner[0] if len(inner) == 1 and cond.startswith("$[") and cond.endswith("]") else cond
        out = set(clean)
        for conjunct in split_top(body, "&"):
            m = re.fullmatch(r'\s*\$\{REGEX\("((?:[^"\\]|\\.)*)"\s+\$\{([^{}]+)\}\)\}\s*', conjunct)
            if m and safe_validator(m.group(1)):
                out.add(_var_name(m.group(2)))
        return frozenset(out)

    # ------------------------------------------------------------------ control flow
    def _target(self, spec: str, ctx: str, exten: str) -> tuple[str, str, int] | None:
        parts = [p.strip() for p in split_top(spec, ",")]
        if len(parts) == 1:
            parts = [ctx, exten, parts[0]]
        elif len(parts) == 2:
            parts = [ctx, *parts]
        tctx, text, tprio = parts
        steps = self.plan.contexts.get(tctx, {}).get(text)
        if not steps:
            return None
        for idx, s in enumerate(steps):
            if (tprio.isdigit() and s.priority == int(tprio)) or s.label == tprio:
                return tctx, text, idx
        return None

    @staticmethod
    def _exten_clean(exten: str) -> bool:
        return not exten.startswith("_")

    def _entry_state(self, exten: str, carried: frozenset[str] | None) -> frozenset[str]:
        base = set(carried if carried is not None else CLEAN_BUILTINS | self.plan.globals)
        base.discard("EXTEN")
        if self._exten_clean(exten):
            base.add("EXTEN")
        return frozenset(base)

    def _check_sink(self, step: Step, app: str, args: str, clean: frozenset[str]) -> None:
        if app.lower() not in SINKS:
            return
        self.report.sink_sites.add(step.line)
        self._in_sink = True
        try:
            bad = self.taint(args, clean)
        finally:
            self._in_sink = False
        if bad:
            self.report.violations.append(Violation(step.context, step.exten, step.priority, step.line, app, bad,
                                                    "unchecked value from outside reaches the argument"))

    def _assign(self, args: str, clean: frozenset[str]) -> frozenset[str]:
        name, sep, value = args.partition("=")
        if not sep:
            return clean
        name = _var_name(name.strip().lstrip("_"))
        out = set(clean)
        if self.taint(value, clean):
            out.discard(name)
        else:
            out.add(name)
        return frozenset(out)

    def run(self) -> Report:
        seen: set[tuple[str, str, int, frozenset[str]]] = set()
        work: list[tuple[str, str, int, frozenset[str]]] = [
            (ctx, ext, 0, self._entry_state(ext, None))
            for ctx, exts in self.plan.contexts.items() for ext in exts]
        while work:
            ctx, ext, idx, clean = work.pop()
            if (ctx, ext, idx, clean) in seen:
                continue
            seen.add((ctx, ext, idx, clean))
            steps = self.plan.contexts[ctx][ext]
            if idx >= len(steps):
                continue
            step = steps[idx]
            app = step.app.lower()
            nxt = (ctx, ext, idx + 1)

            def jump(spec: str, state: frozenset[str], step: Step = step, nxt: tuple[str, str, int] = nxt) -> None:
                if not spec.strip():
                    work.append((*nxt, state))
                    return
                target = self._target(spec, step.context, step.exten)
                if target is None:
                    self.report.violations.append(Violation(step.context, step.exten, step.priority, step.line,
                                                            step.app, frozenset(), f"unknown target {spec!r}"))
                    return
                tctx, text, tidx = target
                carried = state if text == step.exten and tctx == step.context else self._entry_state(text, state)
                work.append((tctx, text, tidx, carried))

            if app == "hangup":
                continue
            if app == "goto":
                jump(step.args, clean)
            elif app == "gotoif":
                cond, branches = [*split_top(step.args, "?", 1), ""][:2]
                then, other = [*split_top(branches, ":", 1), ""][:2]
                jump(then, self.refine(cond, clean))
                jump(other, clean)
            elif app == "execif":
                cond, apps = [*split_top(step.args, "?", 1), ""][:2]
                then, other = [*split_top(apps, ":", 1), ""][:2]
                after = clean
                for branch, state in ((then, self.refine(cond, clean)), (other, clean)):
                    if not branch.strip():
                        continue
                    inner_app, inner_args = _app_call(branch)
                    self._check_sink(step, inner_app, inner_args, state)
                    if inner_app.lower() == "set":
                        after = after & self._assign(inner_args, state)  # either may have run
                work.append((*nxt, after))
            else:
                self._check_sink(step, step.app, step.args, clean)
                if app == "set":
                    clean = self._assign(step.args, clean)
                elif app == "read":
                    clean = clean - {split_top(step.args, ",")[0].strip()}
                work.append((*nxt, clean))
        self.report.states = len(seen)
        return self.report


def check(text: str) -> Report:
    return Analyzer(parse(text)).run()
