"""A private, throw-away PostgreSQL server for tests (the psycopg counterpart of mariadb.py).

Why a real server: what the library promises happens on the *server* side (backends left
open, terminated, idle in a transaction), which only ``pg_stat_activity`` and the server
log can show. Each instance runs its own ``postgres`` from Debian's server binaries
(``/usr/lib/postgresql/<version>/bin``) on a free loopback port, with its unix socket in a
private directory, so the system PostgreSQL on 5432 is never used or touched.

``initdb`` runs once per process into a template cluster (which also gets the test role
and database, created in single-user mode); every instance starts from a copy of it.

PostgreSQL refuses to run as root: as root, the cluster is owned by and the server runs
as the ``postgres`` account (created by Debian's package), or ``nobody`` without it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import psycopg

from tests.servers._private import (
    TEST_USER,
    PrivateServer,
    TemplateDir,
    die_with_parent,
    log_tail,
    wait_for_count,
)
from tests.servers.tls import TLSFiles, generate_tls_files

BIN_GLOB = "/usr/lib/postgresql/*/bin"
APT_LINE = "apt-get install -y --no-install-recommends postgresql"
MISSING_MESSAGE = (
    "PostgreSQL server binaries (initdb, postgres) not found under "
    f"{BIN_GLOB} or on PATH: the test suite runs a private PostgreSQL server. "
    f"Install Debian's postgresql ({APT_LINE}); .ci/run does this."
)

ADMIN = "lc_admin"  # superuser, trusted on the unix socket only
USER = TEST_USER
PASSWORD = "lc-secret-pw"
DATABASE = "lc"
HOST = "127.0.0.1"

SettingValue = str | int | float | bool | None

#: ``-c name=value`` settings every instance gets; callers override them (``None`` drops
#: one). Durability is off because the data is thrown away; every session's end is
#: logged so a test can tell a clean Terminate from a dropped socket.
DEFAULT_SETTINGS: dict[str, SettingValue] = {
    "listen_addresses": HOST,
    "max_connections": 100,
    "shared_buffers": "16MB",
    "fsync": False,
    "synchronous_commit": False,
    "full_page_writes": False,
    "logging_collector": False,
    "log_destination": "stderr",
    "log_connections": True,
    "log_disconnections": True,
    "log_line_prefix": "%m [%p] %q%u@%d ",
}

#: What a backend logs when its client vanished without a Terminate message while a
#: transaction was open (psycopg opens one on the first query unless autocommit).
UNCLEAN_EOF = "unexpected EOF on client connection"

#: Such a line, with the backend pid ``log_line_prefix`` puts in brackets (``[%p]``).
_UNCLEAN_LINE = re.compile(rb"^[^\n\[]*\[(\d+)\] [^\n]*" + re.escape(UNCLEAN_EOF.encode()), re.M)


class UncleanMark(NamedTuple):
    """Where a test started: the server log's size and the sessions open then."""

    offset: int
    sessions: frozenset[int]


class PostgresError(RuntimeError):
    """The private server failed to initialise, start or stop (message has the log tail)."""


class PostgresNotInstalled(PostgresError):
    """The server binaries are missing: the suite must fail, not skip."""


def find_bindir() -> Path:
    """Directory holding ``initdb`` and ``postgres`` (newest Debian version first)."""

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    for bindir in sorted(glob.glob(BIN_GLOB), key=version, reverse=True):
        if all(os.access(Path(bindir) / exe, os.X_OK) for exe in ("initdb", "postgres")):
            return Path(bindir)
    found = shutil.which("postgres")
    if found and shutil.which("initdb"):
        return Path(found).parent
    raise PostgresNotInstalled(MISSING_MESSAGE)


def _server_account() -> tuple[int, int] | None:
    """(uid, gid) to run the server as when we are root; None when we are not."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
    raise PostgresError("running as root and neither a 'postgres' nor a 'nobody' account exists")


def _chown_tree(root: Path, account: tuple[int, int] | None) -> None:
    if account is None:
        return
    uid, gid = account
    os.chown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            os.lchown(os.path.join(dirpath, name), uid, gid)


def _render_settings(settings: Mapping[str, SettingValue]) -> list[str]:
    args = []
    for name, value in settings.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "on" if value else "off"
        args += ["-c", f"{name}={value}"]
    return args


def _run(
    args: list[str], account: tuple[int, int] | None, log: Path, stdin: bytes | None = None
) -> None:
    user = {"user": account[0], "group": account[1], "extra_groups": []} if account else {}
    with log.open("ab") as out:
        proc = subprocess.run(
            args,
            input=stdin,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=180,
            check=False,
            cwd="/",
            **user,  # type: ignore[arg-type]
        )
    if proc.returncode != 0:
        raise PostgresError(f"{Path(args[0]).name} failed (rc={proc.returncode}):\n{log_tail(log)}")


# --------------------------------------------------------------------------- template


_SETUP_SQL = (
    f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'",
    f"CREATE DATABASE {DATABASE} OWNER {USER}",
)


def _build_template(root: Path) -> None:
    bindir = find_bindir()
    account = _server_account()
    _chown_tree(root, account)
    datadir = root / "data"
    log = root / "initdb.log"
    _run(
        [
            str(bindir / "initdb"),
            f"--pgdata={datadir}",
            f"--username={ADMIN}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        ],
        account,
        log,
    )
    # Single-user mode: the role and database without starting a listening server.
    _run(
        [str(bindir / "postgres"), "--single", "-D", str(datadir), "-F", "postgres"],
        account,
        log,
        stdin=("\n".join(_SETUP_SQL) + "\n").encode(),
    )


_template = TemplateDir("lc-pg-tpl-", _build_template)


# --------------------------------------------------------------------------- server


def _untracked() -> contextlib.AbstractContextManager[None]:
    """Admin connections are the fixture's own, even when made inside a handler's scope."""
    try:
        from lambda_conn import untracked
    except ImportError:  # pragma: no cover - the fixture also works without the library
        return contextlib.nullcontext()
    return untracked()


class PostgresServer(PrivateServer):
    """A private ``postgres`` on 127.0.0.1:<free port>: role ``lc`` (password over TCP),
    database ``lc``, and the superuser ``lc_admin`` on the private unix socket.

    ``tls=True`` generates a private CA and a server certificate (SAN 127.0.0.1) and turns
    ``ssl`` on; :meth:`connect_kwargs` then verifies against that CA (``verify-full``).
    ``settings`` become ``-c name=value`` (``True``/``False`` -> on/off, ``None`` removes
    a default), e.g. ``PostgresServer(max_connections=5, idle_session_timeout="1s")``.
    Admin helpers use a separate superuser connection over the unix socket; it is never one
    of the ``lc`` sessions the tests count.
    """

    user = USER
    password = PASSWORD
    database = DATABASE
    host = HOST
    error = PostgresError
    port_in_use_text = "Address already in use"
    session_key = "pid"

    def __init__(
        self,
        *,
        start: bool = True,
        startup_timeout: float = 30.0,
        tls: bool = False,
        tcp_auth: str = "scram-sha-256",
        **settings: SettingValue,
    ) -> None:
        self.bindir = find_bindir()
        self.account = _server_account()
        self.startup_timeout = startup_timeout
        self.settings: dict[str, SettingValue] = {**DEFAULT_SETTINGS, **settings}
        self.port = 0
        self.start_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._admin: psycopg.Connection[Any] | None = None
        self._lock = threading.RLock()
        self.tls: TLSFiles | None = None
        template = _template.datadir()
        self._make_dir("lc-pg-")
        try:
            self.datadir = self.dir / "data"
            shutil.copytree(template, self.datadir, symlinks=True)
            os.chmod(self.datadir, 0o700)
            self.socket_dir = self.dir / "sock"
            self.socket_dir.mkdir()
            self.log = self.dir / "server.log"
            self.log.touch()
            if tls:
                # A private CA and a certificate for 127.0.0.1, made for this instance.
                self.tls = generate_tls_files(self.dir / "tls")
                os.chmod(self.tls.key, 0o600)  # postgres refuses a readable key
                self.settings.update(
                    ssl=True,
                    ssl_cert_file=self.tls.cert,
                    ssl_key_file=self.tls.key,
                    ssl_ca_file=self.tls.ca,
                )
            if tcp_auth != "scram-sha-256":
                self.settings["hba_file"] = str(self._write_hba(tcp_auth))
            _chown_tree(self.dir, self.account)
            if start:
                self.start()
        except BaseException:
            self.close()
            raise

    def _write_hba(self, tcp_auth: str) -> Path:
        """``tcp_auth="trust"``: TCP logins without SCRAM's two PBKDF2 runs (~2/3 of a
        connect here), for tests that open thousands of connections to count them."""
        hba = self.dir / "pg_hba.conf"
        hba.write_text(f"local all all trust\nhost all all {HOST}/32 {tcp_auth}\n")
        return hba

    # ------------------------------------------------------------------ lifecycle

    def command(self) -> list[str]:
        """The exact postgres command line (for error messages and debugging)."""
        return [
            str(self.bindir / "postgres"),
            "-D",
            str(self.datadir),
            "-p",
            str(self.port),
            "-k",
            str(self.socket_dir),
            *_render_settings(self.settings),
        ]

    def _server_log(self) -> Path:
        return self.log

    def _spawn(self) -> None:
        ready_before = self._ready_count()
        main = threading.current_thread() is threading.main_thread()
        user = (
            {"user": self.account[0], "group": self.account[1], "extra_groups": []}
            if self.account
            else {}
        )
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                cwd="/",
                start_new_session=True,  # Ctrl-C reaches pytest, which shuts us down cleanly
                # PDEATHSIG fires when the *thread* that forked exits, so only from main.
                preexec_fn=die_with_parent if main else None,
                **user,  # type: ignore[arg-type]
            )
        try:
            self._wait_ready(ready_before)
        except BaseException:
            self._terminate(self._proc, timeout=10.0)
            raise

    _READY = b"database system is ready to accept connections"

    def _ready_count(self) -> int:
        try:
            return self.log.read_bytes().count(self._READY)
        except OSError:
            return 0

    def _wait_ready(self, ready_before: int) -> None:
        """Wait for the "ready" line in the log, then log in as the admin.

        Why the log and not connect attempts: a refused probe is noise in the log, and the
        line appears only once recovery is over and the socket accepts connections.
        """
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        last: Exception | None = None
        while True:
            if self._proc.poll() is not None:
                raise PostgresError(
                    f"postgres exited with rc={self._proc.returncode} during startup:\n"
                    f"{log_tail(self.log)}"
                )
            if self._ready_count() > ready_before:
                try:
                    self._admin = self._admin_connect()
                    return
                except psycopg.Error as exc:
                    last = exc
            if time.monotonic() > deadline:
                raise PostgresError(
                    f"postgres did not accept connections within {self.startup_timeout:.0f} s "
                    f"(last error: {last!r}):\n{log_tail(self.log)}"
                )
            time.sleep(0.01)

    def _admin_connect(self) -> psycopg.Connection[Any]:
        with _untracked():
            return psycopg.connect(
                host=str(self.socket_dir),
                port=self.port,
                user=ADMIN,
                dbname=DATABASE,
                autocommit=True,
                connect_timeout=5,
                application_name="lc-admin",
            )

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
        """SIGINT is PostgreSQL's "fast" shutdown: abort sessions, checkpoint, exit."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop(self, *, kill: bool = False, timeout: float = 30.0) -> None:
        """Fast shutdown and wait; ``kill=True`` simulates a crash (SIGKILL).

        Open client sessions see their connection dropped, as with a real outage.
        """
        with self._lock:
            self._close_admin()
            proc, self._proc = self._proc, None
            if proc is None:
                return
            if kill and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
                self._reap_orphans()
            else:
                self._terminate(proc, timeout)

    def begin_smart_shutdown(self) -> None:
        """SIGTERM, PostgreSQL's "smart" shutdown: while client sessions remain, new
        connections are refused with 57P03 ("the database system is shutting down");
        the server exits once the last one ends (see :meth:`wait_stopped`)."""
        with self._lock:
            self._close_admin()  # the admin session would hold the server up
            if self._proc is not None:
                self._proc.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout: float = 30.0) -> None:
        """Wait for a shutdown begun elsewhere to finish; the server can then start again."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is not None:
                proc.wait(timeout)

    def _reap_orphans(self) -> None:
        """After SIGKILL of the postmaster its backends notice and exit; wait for that, and
        remove the pid file so the next start does not wait for them."""
        deadline = time.monotonic() + 10
        pidfile = self.datadir / "postmaster.pid"
        while time.monotonic() < deadline:
            if not self._backends_alive():
                break
            time.sleep(0.05)
        with contextlib.suppress(FileNotFoundError):
            pidfile.unlink()

    def _backends_alive(self) -> bool:
        marker = str(self.datadir).encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError):
                if marker in Path(f"/proc/{entry}/cmdline").read_bytes():
                    return True
        return False

    def _server_options(self) -> dict[str, Any]:
        return self.settings

    # ------------------------------------------------------------------ client side

    def connect_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for ``psycopg.connect`` as the test user over TCP."""
        kwargs: dict[str, Any] = {
            "host": HOST,
            "port": self.port,
            "user": USER,
            "password": PASSWORD,
            "dbname": DATABASE,
            "sslmode": "disable",
            "connect_timeout": 5,
        }
        if self.tls is not None:
            kwargs.update(sslmode="verify-full", sslrootcert=self.tls.ca)
        kwargs.update(overrides)
        return kwargs

    def conninfo(self, **overrides: Any) -> str:
        """The same as a libpq connection string (for pools and ``connect(conninfo)``)."""
        from psycopg.conninfo import make_conninfo

        return make_conninfo("", **self.connect_kwargs(**overrides))

    def connect(self, **overrides: Any) -> psycopg.Connection[Any]:
        """A new psycopg client connection (the caller closes it)."""
        return psycopg.connect(**self.connect_kwargs(**overrides))

    def url(self, driver: str = "psycopg") -> str:
        """SQLAlchemy URL, e.g. ``postgresql+psycopg://lc:...@127.0.0.1:PORT/lc``."""
        return (
            f"postgresql+{driver}://{quote(USER, safe='')}:{quote(PASSWORD, safe='')}"
            f"@{HOST}:{self.port}/{DATABASE}?sslmode=disable"
        )

    # ------------------------------------------------------------------ admin side

    def _close_admin(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(Exception):
                admin.close()

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run SQL as the superuser on the admin connection; rows as a list of tuples.

        Reconnects once if the admin connection was lost (e.g. after a restart).
        """
        with self._lock:
            for attempt in (0, 1):
                if not self.running:
                    raise PostgresError(f"server is not running: {self!r}")
                try:
                    if self._admin is None or self._admin.closed:
                        self._admin = self._admin_connect()
                    with self._admin.cursor() as cur:
                        cur.execute(sql, params)  # type: ignore[arg-type]
                        return list(cur.fetchall()) if cur.description else []
                except psycopg.OperationalError:
                    if attempt == 1:
                        raise
                    self._close_admin()
            raise AssertionError("unreachable")

    def client_sessions(self, user: str | None = USER) -> list[dict[str, Any]]:
        """Client backends from ``pg_stat_activity`` (the admin session excluded).

        ``user=None`` lists every user's. Keys: pid, user, client_addr, client_port,
        state, application_name, query.
        """
        sql = (
            "SELECT pid, usename, host(client_addr), client_port, state, application_name, "
            "query FROM pg_stat_activity WHERE backend_type = 'client backend' "
            "AND pid <> pg_backend_pid()"
        )
        params: tuple[Any, ...] = ()
        if user is not None:
            sql += " AND usename = %s"
            params = (user,)
        keys = ("pid", "user", "client_addr", "client_port", "state", "application_name", "query")
        rows = self.query(sql + " ORDER BY pid", params)
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def terminate(self, pid: int) -> bool:
        """``pg_terminate_backend``: the client sees its next read fail (like a failover)."""
        return bool(self.query("SELECT pg_terminate_backend(%s)", (int(pid),))[0][0])

    def terminate_all(self, user: str | None = USER) -> int:
        """Terminate every session of ``user``; returns how many were terminated."""
        return sum(self.terminate(s["pid"]) for s in self.client_sessions(user))

    def wait_for_sessions(self, n: int, user: str | None = USER, timeout: float = 5.0) -> int:
        """Poll until exactly ``n`` sessions of ``user`` exist; returns the last count.

        An absolute count: for a server of the test's own. On a shared one another test's
        session may end or linger meanwhile; snapshot :meth:`session_ids` first and use
        :meth:`wait_new_sessions_gone` / :meth:`wait_new_sessions` instead.
        """
        return wait_for_count(lambda: len(self.client_sessions(user)), n, timeout)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def unclean_disconnects(
        self, pids: AbstractSet[int] | None = None, *, since: UncleanMark | None = None
    ) -> int:
        """Sessions that ended without a Terminate message inside a transaction.

        Without arguments, the whole log's count (any session's, since the server was
        made). ``pids``: only lines of those backends. ``since`` (:meth:`unclean_mark`):
        only lines logged after the mark, by backends that were not open when it was
        taken, i.e. the test's own sessions, not an earlier test's ending meanwhile.
        The log offset matters: pids are handed out again once the kernel's counter wraps.
        """
        data = self.log.read_bytes()
        if since is not None:
            data = data[since.offset :]
        pids_seen = [int(p) for p in _UNCLEAN_LINE.findall(data)]
        if since is not None:
            pids_seen = [p for p in pids_seen if p not in since.sessions]
        if pids is not None:
            pids_seen = [p for p in pids_seen if p in pids]
        return len(pids_seen)

    unclean_closes = unclean_disconnects

    def unclean_mark(self) -> UncleanMark:
        """The log's end now and every user's open sessions (snapshot before the offset, so
        a session opened in between is taken for the test's own, not hidden)."""
        sessions = self.session_ids(user=None)
        return UncleanMark(self.log.stat().st_size, sessions)

    def unclean_closes_since(self, mark: UncleanMark) -> int:
        return self.unclean_disconnects(since=mark)

    end_session = terminate
    session_id_sql = "SELECT pg_backend_pid()"  # what end_session() takes

    def disconnections(self, user: str = USER) -> int:
        """Sessions of ``user`` that have ended (``log_disconnections``)."""
        pattern = re.compile(rf"\b{re.escape(user)}@\S+ LOG:  disconnection:")
        return len(pattern.findall(self.log_text()))

    def log_tail(self, lines: int = 25) -> str:
        return log_tail(self.log, lines)


@contextlib.contextmanager
def private_postgres(**settings: SettingValue) -> Iterator[PostgresServer]:
    """``with private_postgres() as server:`` for scripts and examples."""
    server = PostgresServer(**settings)
    try:
        yield server
    finally:
        server.close()


if __name__ == "__main__":  # manual check: python3 -m tests.servers.postgres
    t = time.monotonic()
    with PostgresServer() as srv:
        print(f"first instance (incl. template) {time.monotonic() - t:.2f} s", file=sys.stderr)
        with PostgresServer() as srv2:
            print(f"second instance start {srv2.start_seconds:.2f} s", file=sys.stderr)
        with srv.connect() as c:
            print(srv, srv.client_sessions(), file=sys.stderr)
        print(srv.wait_for_sessions(0), srv.disconnections(), file=sys.stderr)
