"""A private, throw-away MariaDB server for tests.

Why a real server: the library's whole point is what happens to connections on the
*server* side (sessions left open, killed, timed out), which no mock can show. Each
instance runs its own ``mariadbd`` on a free loopback port with ``--no-defaults``, so the
system's /etc/mysql config and the system MariaDB on 3306 are never touched.

``mariadb-install-db`` runs once per process into a template datadir (which also gets the
test user and database); every instance starts from a copy of it, so a start costs a
fraction of a second instead of an install.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pymysql

from tests.servers._private import (
    TEST_USER,
    PrivateServer,
    TemplateDir,
    die_with_parent,
    log_tail,
    wait_for_count,
)
from tests.servers.tls import TLSFiles, generate_tls_files

MARIADBD_CANDIDATES = ("/usr/sbin/mariadbd", "/usr/libexec/mariadbd", "/usr/bin/mariadbd")
INSTALL_DB_CANDIDATES = ("/usr/bin/mariadb-install-db", "/usr/sbin/mariadb-install-db")
MISSING_MESSAGE = (
    "mariadbd not found: the test suite runs a private MariaDB server. "
    "Install Debian's mariadb-server (apt-get install mariadb-server); .ci/run does this."
)

USER = TEST_USER
PASSWORD = "lc-secret-pw"
DATABASE = "lc"
HOST = "127.0.0.1"

OptionValue = str | int | float | bool | None

#: Options every instance gets; callers override them (``None`` drops one).
#: Small InnoDB files/buffers keep the datadir copy (~20 MB) and memory low; durability
#: settings are relaxed because the data is thrown away.
DEFAULT_OPTIONS: dict[str, OptionValue] = {
    "innodb_log_file_size": "4M",
    "innodb_buffer_pool_size": "32M",
    "innodb_flush_log_at_trx_commit": 2,
    "innodb_doublewrite": False,
    "innodb_use_native_aio": False,
    "character_set_server": "utf8mb4",
    "collation_server": "utf8mb4_general_ci",
}

# Admin-side pymysql errors meaning "the admin connection is gone" (server restarted,
# connection killed, timed out): reconnect once and retry.
_GONE_CODES = {2003, 2006, 2013, 2055, 1927, 4031}


class MariaDBError(RuntimeError):
    """The private server failed to install, start or stop (message has the log tail)."""


class MariaDBNotInstalled(MariaDBError):
    """``mariadbd``/``mariadb-install-db`` are missing: the suite must fail, not skip."""


def _find(candidates: tuple[str, ...], name: str) -> str:
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which(name)
    if found:
        return found
    raise MariaDBNotInstalled(MISSING_MESSAGE)


def find_mariadbd() -> str:
    """Path of ``mariadbd``; raises :class:`MariaDBNotInstalled` with the install hint."""
    return _find(MARIADBD_CANDIDATES, "mariadbd")


def find_install_db() -> str:
    """Path of ``mariadb-install-db``; raises :class:`MariaDBNotInstalled` if missing."""
    return _find(INSTALL_DB_CANDIDATES, "mariadb-install-db")


def _run_as_root_args() -> list[str]:
    # mariadbd refuses to run as root unless told to; as non-root --user is ignored
    # with a warning, so only pass it when it matters.
    return ["--user=root"] if os.geteuid() == 0 else []


def _render_options(options: Mapping[str, OptionValue]) -> list[str]:
    args = []
    for name, value in options.items():
        if value is None:
            continue
        if value is True:
            args.append(f"--{name}")
        elif value is False:
            args.append(f"--{name}=OFF")
        else:
            args.append(f"--{name}={value}")
    return args


# --------------------------------------------------------------------------- template

_tls_files: TLSFiles | None = None

_SETUP_SQL = (
    # install-db also creates root@<hostname>, which --skip-name-resolve warns about on
    # every start; the CREATE/GRANT below are the test user for TCP and the unix socket.
    f"CREATE DATABASE `{DATABASE}` CHARACTER SET utf8mb4",
    f"CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'",
    f"CREATE USER '{USER}'@'localhost' IDENTIFIED BY '{PASSWORD}'",
    f"GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'127.0.0.1'",
    f"GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'localhost'",
    # SUPER/CONNECTION ADMIN would let 'lc' take the reserved extra connection past
    # max_connections and skip init_connect: keep it an ordinary application user.
    f"REVOKE SUPER, CONNECTION ADMIN ON *.* FROM '{USER}'@'127.0.0.1'",
    f"REVOKE SUPER, CONNECTION ADMIN ON *.* FROM '{USER}'@'localhost'",
)


def _build_template(root: Path) -> None:
    mariadbd = find_mariadbd()
    install_db = find_install_db()
    datadir = root / "data"
    log = root / "install.log"
    base_opts = _render_options(DEFAULT_OPTIONS)
    with log.open("wb") as out:
        proc = subprocess.run(
            [
                install_db,
                "--no-defaults",
                *_run_as_root_args(),
                f"--datadir={datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                # Private temp tables: the default /tmp is shared with every other
                # bootstrap on the machine, and a name clash fails the install at random.
                f"--tmpdir={root}",
                *base_opts,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=180,
            check=False,
        )
    if proc.returncode != 0:
        raise MariaDBError(f"mariadb-install-db failed (rc={proc.returncode}):\n{log_tail(log)}")
    # Boot once without networking to create the test user/database, then shut down
    # cleanly so every copy starts from a consistent datadir.
    sock = root / "tpl.sock"
    err = root / "tpl-error.log"
    server = subprocess.Popen(
        [
            mariadbd,
            "--no-defaults",
            f"--datadir={datadir}",
            f"--socket={sock}",
            "--skip-networking",
            "--skip-name-resolve",
            *_run_as_root_args(),
            f"--pid-file={root / 'tpl.pid'}",
            f"--tmpdir={root}",
            f"--log-error={err}",
            *base_opts,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        conn = _wait_connectable(server, sock, err, timeout=60.0)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT user, host FROM mysql.user WHERE user = 'root' "
                    "AND host NOT IN ('localhost', '127.0.0.1', '::1')"
                )
                for user, host in cur.fetchall():
                    cur.execute("DROP USER %s@%s", (user, host))
                for sql in _SETUP_SQL:
                    cur.execute(sql)
        finally:
            conn.close()
    finally:
        _terminate(server, timeout=60.0)
    if server.returncode != 0:
        raise MariaDBError(f"template server did not shut down cleanly:\n{log_tail(err)}")


_template = TemplateDir("lc-mdb-tpl-", _build_template)


_READY = b"ready for connections"


def _ready_count(error_log: Path) -> int:
    try:
        return error_log.read_bytes().count(_READY)
    except OSError:
        return 0


def _wait_connectable(
    proc: subprocess.Popen[bytes],
    sock: Path,
    error_log: Path,
    timeout: float,
    ready_before: int = 0,
) -> pymysql.connections.Connection:
    """Wait for "ready for connections" in the error log, then log in as root.

    Why the log and not connect attempts: probes count as Aborted_connects and log a
    warning, and pymysql leaks its socket (ResourceWarning) when a unix-socket connect()
    is refused. ``ready_before`` is the count of that line before this start (the log
    is appended to across restarts).
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        if proc.poll() is not None:
            raise MariaDBError(
                f"mariadbd exited with rc={proc.returncode} during startup:\n{log_tail(error_log)}"
            )
        if _ready_count(error_log) > ready_before:
            try:
                return _admin_connect(sock)
            except pymysql.err.MySQLError as exc:
                last = exc
        if time.monotonic() > deadline:
            raise MariaDBError(
                f"mariadbd did not accept connections within {timeout:.0f} s "
                f"(last error: {last!r}):\n{log_tail(error_log)}"
            )
        time.sleep(0.01)


def _admin_connect(sock: Path) -> pymysql.connections.Connection:
    conn = pymysql.connect(
        unix_socket=str(sock),
        user="root",
        password="",
        autocommit=True,
        connect_timeout=5,
        read_timeout=60,
        write_timeout=60,
    )
    # Tests lower the *global* wait_timeout; the admin session must not time out.
    with conn.cursor() as cur:
        cur.execute("SET SESSION wait_timeout = 31536000, interactive_timeout = 31536000")
    return conn


def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM (mariadbd's clean shutdown), then SIGKILL if it hangs."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


# --------------------------------------------------------------------------- server


class MariaDBServer(PrivateServer):
    """A private ``mariadbd`` on 127.0.0.1:<free port> with user ``lc`` and db ``lc``.

    ``options`` become ``--name=value`` server options (``True`` -> ``--name``,
    ``False`` -> ``--name=OFF``, ``None`` removes a default), e.g.
    ``MariaDBServer(max_connections=2000, wait_timeout=5)``. ``tls=True`` generates a
    private CA + server cert and configures ``ssl-ca/ssl-cert/ssl-key``.

    Admin helpers use a separate root connection over the unix socket; it is never one
    of the ``lc`` sessions the tests count.
    """

    user = USER
    password = PASSWORD
    database = DATABASE
    host = HOST
    error = MariaDBError
    port_in_use_text = "already in use"

    def __init__(
        self,
        *,
        tls: bool = False,
        tls_key: str = "rsa2048",
        start: bool = True,
        startup_timeout: float = 30.0,
        **options: OptionValue,
    ) -> None:
        self.mariadbd = find_mariadbd()
        self.startup_timeout = startup_timeout
        self.options: dict[str, OptionValue] = {**DEFAULT_OPTIONS, **options}
        self.tls: TLSFiles | None = None
        self.port = 0
        self.start_seconds: float | None = None  # wall time of the last start()
        self._proc: subprocess.Popen[bytes] | None = None
        self._admin: pymysql.connections.Connection | None = None
        self._lock = threading.RLock()
        template = _template.datadir()
        self._make_dir("lc-mdb-")
        try:
            self.datadir = self.dir / "data"
            shutil.copytree(template, self.datadir)
            self.socket = self.dir / "mysqld.sock"
            self.error_log = self.dir / "error.log"
            self.pid_file = self.dir / "mysqld.pid"
            if tls:
                self.tls = generate_tls_files(self.dir / "tls", key_type=tls_key)
                self.options.update(
                    ssl_ca=self.tls.ca, ssl_cert=self.tls.cert, ssl_key=self.tls.key
                )
            if start:
                self.start()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ lifecycle

    def command(self) -> list[str]:
        """The exact mariadbd command line (for error messages and debugging)."""
        return [
            self.mariadbd,
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={self.socket}",
            f"--port={self.port}",
            f"--bind-address={HOST}",
            "--skip-name-resolve",
            *_run_as_root_args(),
            f"--pid-file={self.pid_file}",
            f"--tmpdir={self.dir}",
            f"--log-error={self.error_log}",
            *_render_options(self.options),
        ]

    def _server_log(self) -> Path:
        return self.error_log

    def _spawn(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()  # stale after a crash (stop(kill=True))
        ready_before = _ready_count(self.error_log)
        main = threading.current_thread() is threading.main_thread()
        self._proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches pytest, which shuts us down cleanly
            # PDEATHSIG fires when the *thread* that forked exits, so only from main.
            preexec_fn=die_with_parent if main else None,
        )
        try:
            self._admin = _wait_connectable(
                self._proc, self.socket, self.error_log, self.startup_timeout, ready_before
            )
        except BaseException:
            _terminate(self._proc, timeout=10.0)
            raise

    def stop(self, *, kill: bool = False, timeout: float = 30.0) -> None:
        """Clean shutdown (SIGTERM) and wait; ``kill=True`` simulates a crash (SIGKILL).

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
            else:
                _terminate(proc, timeout)

    def _server_options(self) -> dict[str, Any]:
        return self.options

    # ------------------------------------------------------------------ client side

    def function_env(self) -> dict[str, str]:
        """``DB_PORT``, ``DB_USER``, ``DB_PASSWORD``, ``DB_NAME``: how a test's handler
        module (in a runtime process of its own) finds this server on 127.0.0.1."""
        return {
            "DB_PORT": str(self.port),
            "DB_USER": USER,
            "DB_PASSWORD": PASSWORD,
            "DB_NAME": DATABASE,
        }

    def connect_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for ``pymysql.connect`` as the test user over TCP."""
        kwargs: dict[str, Any] = {
            "host": HOST,
            "port": self.port,
            "user": USER,
            "password": PASSWORD,
            "database": DATABASE,
        }
        if self.tls is not None:
            kwargs.update(ssl_ca=self.tls.ca, ssl_verify_cert=True, ssl_verify_identity=True)
        else:
            kwargs["ssl_disabled"] = True
        kwargs.update(overrides)
        return kwargs

    def connect(self, **overrides: Any) -> pymysql.connections.Connection:
        """A new pymysql client connection (the caller closes it)."""
        return pymysql.connect(**self.connect_kwargs(**overrides))

    def url(self, driver: str = "pymysql", **query: str) -> str:
        """SQLAlchemy URL, e.g. ``mysql+pymysql://lc:...@127.0.0.1:PORT/lc``."""
        if self.tls is not None:
            query = {"ssl_ca": self.tls.ca, "ssl_check_hostname": "true", **query}
        base = (
            f"mysql+{driver}://{quote(USER, safe='')}:{quote(PASSWORD, safe='')}"
            f"@{HOST}:{self.port}/{DATABASE}"
        )
        return f"{base}?{urlencode(query)}" if query else base

    # ------------------------------------------------------------------ admin side

    def _close_admin(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(Exception):
                admin.close()

    @contextlib.contextmanager
    def _admin_cursor(self) -> Iterator[pymysql.cursors.Cursor]:
        with self._lock:
            if not self.running:
                raise MariaDBError(f"server is not running: {self!r}")
            if self._admin is None:
                self._admin = _admin_connect(self.socket)
            with self._admin.cursor() as cur:
                yield cur

    def query(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        """Run SQL as root on the admin connection; rows as a list of tuples.

        Reconnects once if the admin connection was lost (e.g. after a restart).
        """
        with self._lock:
            for attempt in (0, 1):
                try:
                    with self._admin_cursor() as cur:
                        cur.execute(sql, args)
                        return list(cur.fetchall()) if cur.description else []
                except (pymysql.err.OperationalError, pymysql.err.InterfaceError) as exc:
                    gone = isinstance(exc, pymysql.err.InterfaceError) or (
                        exc.args and exc.args[0] in _GONE_CODES
                    )
                    if not gone or attempt == 1:
                        raise
                    self._close_admin()
            raise AssertionError("unreachable")

    def threads_connected(self) -> int:
        """Server-side ``Threads_connected`` minus 1: the admin connection itself.

        The admin connection is necessarily open while the status is read, so the
        result is the number of *other* client connections (any user, any transport).
        """
        rows = self.query("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
        return int(rows[0][1]) - 1

    def client_sessions(self, user: str | None = USER) -> list[dict[str, Any]]:
        """Sessions from information_schema.processlist (admin excluded).

        ``user=None`` lists every user's sessions. Keys: id, user, host, db, command,
        time, state, info.
        """
        sql = (
            "SELECT id, user, host, db, command, time, state, info "
            "FROM information_schema.processlist WHERE id <> CONNECTION_ID()"
        )
        args: tuple[Any, ...] = ()
        if user is not None:
            sql += " AND user = %s"
            args = (user,)
        keys = ("id", "user", "host", "db", "command", "time", "state", "info")
        rows = self.query(sql + " ORDER BY id", args)
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def kill(self, session_id: int) -> None:
        """``KILL CONNECTION``: the client sees its next read fail (like a DB failover)."""
        self.query("KILL CONNECTION %s", (int(session_id),))

    def kill_all(self, user: str | None = USER) -> int:
        """Kill every session of ``user``; returns how many were killed."""
        killed = 0
        for session in self.client_sessions(user):
            try:
                self.kill(session["id"])
                killed += 1
            except pymysql.err.OperationalError as exc:
                if exc.args[0] != 1094:  # unknown thread id: it ended meanwhile
                    raise
        return killed

    def set_global(self, name: str, value: str | int | float | bool) -> None:
        """``SET GLOBAL name = value`` (affects new sessions for most variables)."""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"bad variable name: {name!r}")
        self.query(f"SET GLOBAL {name} = %s", (value,))

    def get_global(self, name: str) -> str | None:
        """Value of a global variable as the server reports it."""
        rows = self.query("SHOW GLOBAL VARIABLES LIKE %s", (name,))
        return rows[0][1] if rows else None

    def wait_for_sessions(self, n: int, user: str | None = USER, timeout: float = 5.0) -> int:
        """Poll until exactly ``n`` sessions of ``user`` exist; returns the last count.

        An absolute count: for a server of the test's own. On a shared one another test's
        session may end or linger meanwhile; snapshot :meth:`session_ids` first and use
        :meth:`wait_new_sessions_gone` / :meth:`wait_new_sessions` instead.
        """
        return wait_for_count(lambda: len(self.client_sessions(user)), n, timeout)

    def aborted_clients(self) -> int:
        """``Aborted_clients``: sessions that ended without a COM_QUIT (a killed process)."""
        return int(self.query("SHOW GLOBAL STATUS LIKE 'Aborted_clients'")[0][1])

    unclean_closes = aborted_clients

    def unclean_mark(self) -> int:
        return self.aborted_clients()

    def unclean_closes_since(self, mark: int) -> int:
        """Server-wide: ``Aborted_clients`` does not say whose session it counted, so an
        earlier test's session dropped meanwhile is counted too."""
        return self.aborted_clients() - mark

    end_session = kill
    session_id_sql = "SELECT CONNECTION_ID()"  # what end_session() takes

    def wait_threads_connected(self, n: int, timeout: float = 5.0) -> int:
        """Like :meth:`wait_for_sessions` for :meth:`threads_connected`."""
        return wait_for_count(self.threads_connected, n, timeout)

    def errorlog_tail(self, lines: int = 25) -> str:
        return log_tail(self.error_log, lines)


if __name__ == "__main__":  # manual check: python3 -m tests.servers.mariadb
    t = time.monotonic()
    with MariaDBServer() as srv:
        print(f"first instance (incl. template) {time.monotonic() - t:.2f} s", file=sys.stderr)
        with MariaDBServer() as srv2:
            print(f"second instance start {srv2.start_seconds:.2f} s", file=sys.stderr)
        print(srv, srv.threads_connected(), srv.client_sessions(), file=sys.stderr)
