"""A private PostgreSQL cluster that the project controls (tests, benchmarks, single-box installs).

Why a private cluster instead of the system one: tests and benches must not depend on (or damage) a
server someone else configured, must pick free ports so parallel runs never collide, and must be able
to stop/start the server on purpose (outage tests).

Everything here is synchronous subprocess code: it is called from fixtures and CLI tools, never from
the service's event loop.

PostgreSQL refuses to run as root.  When this process is root, every server binary is run as the
``postgres`` system user (created with ``useradd --system`` if missing) through ``runuser``, and the
data directory is owned by that user.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger(__name__)

#: OS account used to run the server when we are root.
SYSTEM_USER = "postgres"
#: Name of the cluster's superuser role (the app role is a separate, non-superuser owner of its db).
SUPERUSER = "postgres"
#: Where the generated superuser password is kept (inside the datadir, mode 0600).
SUPERUSER_PW_FILE = "ccpbx_superuser.pw"
#: Our settings file, included from postgresql.conf, so our tuning is visible in one place.
CONF_FILE = "ccpbx.conf"
LOG_FILE = "server.log"
# sockaddr_un.sun_path is 108 bytes including the NUL.
_MAX_SOCKET_PATH = 107
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class PgError(RuntimeError):
    """A PostgreSQL server binary failed; the message carries its output."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free right now on ``host``.

    The OS picks it (bind to port 0), so parallel test runs do not collide.  There is an unavoidable
    window before the caller binds it; callers retry start-up on a new port if that ever matters.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _version_key(path: str) -> tuple[int, ...]:
    """Sort key for /usr/lib/postgresql/<version>/bin: numeric, so 15 > 9.6."""
    ver = Path(path).parent.name
    return tuple(int(p) for p in re.findall(r"\d+", ver)) or (0,)


def find_bindir() -> Path:
    """Locate the PostgreSQL server binaries.

    Debian keeps them off PATH in /usr/lib/postgresql/<major>/bin; take the highest version there,
    then fall back to ``pg_config --bindir`` and finally to an ``initdb`` on PATH.
    """
    candidates = [p for p in glob.glob("/usr/lib/postgresql/*/bin") if os.access(Path(p) / "initdb", os.X_OK)]
    if candidates:
        return Path(max(candidates, key=_version_key))
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        bindir = Path(out.stdout.strip())
        if out.returncode == 0 and (bindir / "initdb").exists():
            return bindir
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise PgError(
        "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin, pg_config, PATH); "
        "install them, e.g. `apt-get install postgresql`"
    )


def _sql_literal(value: str) -> str:
    """Quote a string as an SQL literal (standard_conforming_strings is on since 9.1)."""
    if "\x00" in value:
        raise ValueError("NUL character not allowed")
    return "'" + value.replace("'", "''") + "'"


def _ensure_system_user() -> pwd.struct_passwd:
    """Return the ``postgres`` account, creating it as a system user if it does not exist."""
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        pass
    log.warning("creating system user %r to run PostgreSQL (it refuses to run as root)", SYSTEM_USER)
    subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin",
         SYSTEM_USER],
        check=True, capture_output=True,
    )
    return pwd.getpwnam(SYSTEM_USER)


class PgCluster:
    """One PostgreSQL cluster in ``datadir`` listening on 127.0.0.1:``port``.

    ``init()`` creates it (once), ``start()``/``stop()`` control the server, ``dsn`` is what the
    application connects with.  The application role ``user`` owns database ``dbname`` but is not a
    superuser; a superuser ``postgres`` with a generated password exists for admin work (creating
    per-test databases), see ``superuser_dsn``.
    """

    def __init__(
        self,
        datadir: Path,
        port: int,
        *,
        user: str = "ccpbx",
        password: str,
        dbname: str = "ccpbx",
        bindir: Path | None = None,
    ) -> None:
        if not _IDENT_RE.match(user) or not _IDENT_RE.match(dbname):
            raise ValueError("user and dbname must be plain identifiers ([A-Za-z_][A-Za-z0-9_]*)")
        if not password:
            raise ValueError("password must not be empty (scram-sha-256 auth is enforced)")
        if not 0 < port < 65536:
            raise ValueError(f"bad port {port}")
        self.datadir = Path(datadir).absolute()
        self.port = port
        self.user = user
        self.password = password
        self.dbname = dbname
        self.bindir = Path(bindir) if bindir else find_bindir()
        self._as_root = os.geteuid() == 0

    # ----------------------------------------------------------------- properties
    @property
    def dsn(self) -> str:
        """DSN of the application role on its database, over TCP on 127.0.0.1."""
        return self._dsn(self.user, self.password, self.dbname)

    def dsn_for(self, dbname: str) -> str:
        """DSN of the application role on another database of this cluster (e.g. a per-test one)."""
        return self._dsn(self.user, self.password, dbname)

    @property
    def superuser_dsn(self) -> str:
        """DSN of the cluster superuser (admin tasks only: create/drop databases in tests)."""
        pw = (self.datadir / SUPERUSER_PW_FILE).read_text().strip()
        return self._dsn(SUPERUSER, pw, "postgres")

    @property
    def log_path(self) -> Path:
        """The server's log file (stderr of the postmaster)."""
        return self.datadir / LOG_FILE

    def _dsn(self, user: str, password: str, db: str) -> str:
        return f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.port}/{db}"

    # ----------------------------------------------------------------- running binaries
    def _run(
        self, argv: Sequence[str], *, input_text: str | None = None, check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run a server binary, as the ``postgres`` user when we are root."""
        cmd = list(argv)
        if self._as_root:
            _ensure_system_user()
            cmd = ["runuser", "-u", SYSTEM_USER, "--", *cmd]
        # cwd=/: the postgres user may not be able to enter our cwd (e.g. /root), which some
        # binaries complain about.
        proc = subprocess.run(
            cmd, input=input_text, capture_output=True, text=True, cwd="/", timeout=timeout, check=False,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
        )
        if check and proc.returncode != 0:
            raise PgError(
                f"{Path(argv[0]).name} failed (exit {proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
            )
        return proc

    def _bin(self, name: str) -> str:
        return str(self.bindir / name)

    def _give_to_server_user(self, path: Path) -> None:
        """chown ``path`` to the server account (root only) so initdb/postgres can write it."""
        if self._as_root:
            pw = _ensure_system_user()
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _check_reachable(self, path: Path) -> None:
        """Fail early with a clear message when the server user cannot reach ``path``.

        Typical cause: a parent folder with mode 0700 owned by root (pytest's tmp folders are).
        """
        if not self._as_root:
            return
        proc = self._run(["test", "-w", str(path), "-a", "-x", str(path)], check=False)
        if proc.returncode != 0:
            raise PgError(
                f"user {SYSTEM_USER!r} cannot write {path}: make every parent folder traversable "
                f"(chmod o+x) or put the data directory elsewhere"
            )

    # ----------------------------------------------------------------- lifecycle
    def is_initialized(self) -> bool:
        """True when ``datadir`` holds a cluster created by ``init()``."""
        return (self.datadir / "PG_VERSION").exists()

    def init(self) -> None:
        """Create the cluster, its roles and database; a no-op when it already exists.

        initdb runs into a sibling staging folder that is renamed into place only once the role and
        database exist, so an interrupted init never leaves a half-made cluster behind that a later
        call would mistake for a good one.
        """
        if self.is_initialized():
            return
        if self.datadir.exists() and any(self.datadir.iterdir()):
            raise PgError(f"{self.datadir} exists, is not empty and holds no PostgreSQL cluster")
        parent = self.datadir.parent
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{self.datadir.name}.init-", dir=parent))
        try:
            os.chmod(staging, 0o700)
            self._give_to_server_user(staging)
            self._check_reachable(staging)
            su_password = secrets.token_urlsafe(24)
            pwfile = staging / SUPERUSER_PW_FILE
            pwfile.write_text(su_password)
            os.chmod(pwfile, 0o600)
            self._give_to_server_user(pwfile)
            # initdb wants an empty directory: build in staging/data, then move it up.
            data = staging / "data"
            self._run([
                self._bin("initdb"), "-D", str(data), "-U", SUPERUSER, f"--pwfile={pwfile}",
                "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C",
            ])
            shutil.move(str(pwfile), data / SUPERUSER_PW_FILE)
            self._write_config(data)
            self._create_role_and_db(data)
            if self.datadir.exists():
                self.datadir.rmdir()  # empty (checked above)
            os.rename(data, self.datadir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("initialised PostgreSQL cluster in %s (port %d)", self.datadir, self.port)

    def _socket_dir(self) -> str:
        """Unix socket folder inside the datadir, or '' (TCP only) when the path would be too long."""
        path = str(self.datadir)
        if len(path) + len(f"/.s.PGSQL.{self.port}.lock") > _MAX_SOCKET_PATH:
            log.warning("datadir path too long for a unix socket; the cluster listens on TCP only")
            return ""
        return path

    def _write_config(self, data: Path) -> None:
        """Write our settings and the client-auth rules.

        Settings suit a test/bench box: listen on 127.0.0.1 only, scram-sha-256 everywhere, no JIT
        (it costs more than it saves on short OLTP statements).  fsync and synchronous_commit keep
        their safe defaults: a benchmark that turns durability off measures nothing useful.
        """
        conf = "\n".join([
            "# written by ops/postgres.py",
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = {_sql_literal(self._socket_dir())}",
            "unix_socket_permissions = 0700",
            "password_encryption = 'scram-sha-256'",
            "max_connections = 100",
            "shared_buffers = '128MB'",
            "work_mem = '16MB'",
            "maintenance_work_mem = '64MB'",
            "max_wal_size = '1GB'",
            "checkpoint_timeout = '15min'",
            "jit = off",
            "timezone = 'UTC'",
            "log_timezone = 'UTC'",
            "lc_messages = 'C'",
            "log_line_prefix = '%m [%p] %q%u@%d '",
            "log_min_duration_statement = 1000",
            "",
        ])
        (data / CONF_FILE).write_text(conf)
        with open(data / "postgresql.conf", "a") as f:
            f.write(f"\ninclude '{CONF_FILE}'\n")
        (data / "pg_hba.conf").write_text(
            "# written by ops/postgres.py: password (scram-sha-256) for everyone, loopback only\n"
            "local   all  all                 scram-sha-256\n"
            "host    all  all  127.0.0.1/32   scram-sha-256\n"
        )
        for name in (CONF_FILE, "pg_hba.conf"):
            self._give_to_server_user(data / name)

    def _create_role_and_db(self, data: Path) -> None:
        """Create the app role and database in single-user mode.

        Single-user mode needs no running server, socket or client library, and the password
        travels on stdin (never on a command line visible in ``ps``).  It exits 0 even when a
        statement fails, so its stderr is checked for ERROR/FATAL.
        """
        stmts = []
        if self.user == SUPERUSER:
            stmts.append(f"ALTER ROLE {self.user} PASSWORD {_sql_literal(self.password)};")
        else:
            stmts.append(f"CREATE ROLE {self.user} LOGIN PASSWORD {_sql_literal(self.password)};")
        if self.dbname != "postgres":
            stmts.append(
                f"CREATE DATABASE {self.dbname} OWNER {self.user} ENCODING 'UTF8' TEMPLATE template0;"
            )
        proc = self._run(
            [self._bin("postgres"), "--single", "-D", str(data), "postgres"],
            input_text="\n".join(stmts) + "\n",
        )
        bad = [ln for ln in proc.stderr.splitlines() if re.search(r"\b(ERROR|FATAL|PANIC):", ln)]
        if bad:
            # Do not echo the statement lines: they carry the password.
            shown = "; ".join(b for b in bad if "STATEMENT" not in b)
            raise PgError(f"creating role/database failed: {shown}")

    def is_running(self) -> bool:
        """True when a postmaster serves ``datadir`` (``pg_ctl status``)."""
        if not self.is_initialized():
            return False
        proc = self._run([self._bin("pg_ctl"), "status", "-D", str(self.datadir)], check=False)
        return proc.returncode == 0

    def start(self, timeout: float = 30) -> None:
        """Start the server and wait until it accepts connections; fine if it already runs.

        The port is passed on the command line so the object's ``port`` wins over the one written
        at init (a datadir can be reused on another free port).
        """
        if not self.is_initialized():
            raise PgError(f"no cluster in {self.datadir}: call init() first")
        if self.is_running():
            return
        t0 = time.monotonic()
        proc = self._run(
            [self._bin("pg_ctl"), "start", "-w", "-t", str(max(1, int(timeout))), "-D", str(self.datadir),
             "-l", str(self.log_path), "-o", f"-p {self.port}"],
            check=False, timeout=timeout + 10,
        )
        if proc.returncode != 0:
            raise PgError(
                f"pg_ctl start failed (exit {proc.returncode}): {proc.stderr.strip()}\n"
                f"--- last lines of {self.log_path} ---\n{self._log_tail()}"
            )
        log.info("PostgreSQL up on 127.0.0.1:%d in %.2fs", self.port, time.monotonic() - t0)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``smart``, ``fast`` or ``immediate``); a no-op when it is not running."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"bad stop mode {mode!r}")
        if not self.is_running():
            return
        self._run([self._bin("pg_ctl"), "stop", "-w", "-m", mode, "-D", str(self.datadir)])

    def destroy(self) -> None:
        """Stop the server and delete the data directory (tests and benches clean up with this)."""
        with contextlib.suppress(PgError):
            self.stop("immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as e:
            return f"(no log: {e})"

    def __repr__(self) -> str:
        return (f"PgCluster(datadir={str(self.datadir)!r}, port={self.port}, "
                f"user={self.user!r}, db={self.dbname!r})")
