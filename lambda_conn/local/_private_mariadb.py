"""A throw-away MariaDB for ``lambda-conn demo --fanout``, when ``mariadbd`` is installed.

Why a real server when one exists: its ``max_connections`` and its 1040 refusal are the
ones production has. It runs ``mariadbd --no-defaults`` on a free loopback port from a
fresh data directory in a temp dir (the system's /etc/mysql and its server on 3306 are
never touched), with a demo user that has no SUPER or CONNECTION ADMIN privilege (those
may take a connection past ``max_connections``), and is removed on ``stop()``.
The test suite's own servers are in tests/servers/mariadb.py; this one is what a user's
machine runs, so it needs nothing from the tests.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["MIN_MAX_CONNECTIONS", "PrivateMariaDB", "PrivateMariaDBError", "find_mariadbd"]

_MARIADBD = ("/usr/sbin/mariadbd", "/usr/libexec/mariadbd", "/usr/bin/mariadbd")
_INSTALL_DB = ("/usr/bin/mariadb-install-db", "/usr/sbin/mariadb-install-db")
_READY = b"ready for connections"
_USER, _DATABASE = "demo", "demo"
#: MariaDB raises a smaller ``max_connections`` to 10 (with a warning in its log).
MIN_MAX_CONNECTIONS = 10
#: Small InnoDB files and buffers: the demo's data is one connection count.
_OPTIONS = (
    "--innodb-log-file-size=4M",
    "--innodb-buffer-pool-size=16M",
    "--innodb-flush-log-at-trx-commit=2",
    "--innodb-doublewrite=OFF",
    "--innodb-use-native-aio=OFF",
    "--performance-schema=OFF",
    "--skip-name-resolve",
    "--bind-address=127.0.0.1",
)


class PrivateMariaDBError(RuntimeError):
    """mariadbd could not be installed or started (the message has its log's tail)."""


def _find(candidates: tuple[str, ...], name: str) -> str | None:
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    return shutil.which(name)


def find_mariadbd() -> str | None:
    """The path of ``mariadbd`` (and ``mariadb-install-db`` beside it), or None."""
    if _find(_INSTALL_DB, "mariadb-install-db") is None:
        return None
    return _find(_MARIADBD, "mariadbd")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


class PrivateMariaDB:
    """``with PrivateMariaDB(max_connections=6) as db: db.dsn`` (``mysql://demo:...@...``)."""

    def __init__(self, *, max_connections: int, startup_timeout: float = 60.0) -> None:
        if (
            isinstance(max_connections, bool)
            or not isinstance(max_connections, int)
            or max_connections < MIN_MAX_CONNECTIONS
        ):
            raise ValueError(
                f"max_connections={max_connections!r} is not accepted: expected an integer "
                f">= {MIN_MAX_CONNECTIONS} (MariaDB's minimum)"
            )
        mariadbd = find_mariadbd()
        if mariadbd is None:
            raise PrivateMariaDBError(
                "mariadbd and mariadb-install-db not found (Debian: apt-get install "
                "mariadb-server); the fan-out demo uses its embedded server without them"
            )
        self.mariadbd = mariadbd
        self.max_connections = max_connections
        self.startup_timeout = startup_timeout
        self.port = 0
        self._password = secrets.token_hex(12)
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return f"mysql://{_USER}:{self._password}@127.0.0.1:{self.port}/{_DATABASE}"

    def __enter__(self) -> PrivateMariaDB:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Install a data directory, start the server and wait until it accepts clients."""
        base = tempfile.gettempdir()
        self._dir = Path(
            tempfile.mkdtemp(prefix="lc-demo-mdb-", dir=base if len(base) < 60 else "/tmp")
        )
        try:
            self._install()
            self._spawn()
        except BaseException:
            self.stop()
            raise

    def _root_args(self) -> list[str]:
        # mariadbd refuses to run as root unless told to.
        return ["--user=root"] if os.geteuid() == 0 else []

    def _install(self) -> None:
        assert self._dir is not None
        install_db = _find(_INSTALL_DB, "mariadb-install-db")
        assert install_db is not None, "find_mariadbd() checked it"
        log = self._dir / "install.log"
        with log.open("wb") as out:
            done = subprocess.run(
                [
                    install_db,
                    "--no-defaults",
                    *self._root_args(),
                    f"--datadir={self._dir / 'data'}",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                    f"--tmpdir={self._dir}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=180,
                check=False,
            )
        if done.returncode != 0:
            raise PrivateMariaDBError(
                f"mariadb-install-db failed (exit {done.returncode}):\n{_tail(log)}"
            )
        (self._dir / "init.sql").write_text(
            f"CREATE DATABASE IF NOT EXISTS `{_DATABASE}`;\n"
            f"CREATE USER IF NOT EXISTS '{_USER}'@'127.0.0.1' IDENTIFIED BY '{self._password}';\n"
            f"GRANT SELECT ON `{_DATABASE}`.* TO '{_USER}'@'127.0.0.1';\n"
        )

    def _spawn(self) -> None:
        assert self._dir is not None
        error_log = self._dir / "error.log"
        for attempt in range(5):
            self.port = _free_port()
            self._proc = subprocess.Popen(
                [
                    self.mariadbd,
                    "--no-defaults",
                    *self._root_args(),
                    f"--datadir={self._dir / 'data'}",
                    f"--socket={self._dir / 'mysqld.sock'}",
                    f"--port={self.port}",
                    f"--pid-file={self._dir / 'mysqld.pid'}",
                    f"--tmpdir={self._dir}",
                    f"--log-error={error_log}",
                    f"--init-file={self._dir / 'init.sql'}",
                    f"--max-connections={self.max_connections}",
                    *_OPTIONS,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the demo, which stops the server
            )
            if self._wait_ready(error_log):
                return
            if "already in use" not in _tail(error_log) or attempt == 4:
                break
        raise PrivateMariaDBError(f"mariadbd did not start:\n{_tail(error_log)}")

    def _wait_ready(self, error_log: Path) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                return False
            with contextlib.suppress(OSError):
                if _READY in error_log.read_bytes():
                    return True
            time.sleep(0.02)
        self._terminate()
        return False

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        """Shut the server down and remove its directory (idempotent)."""
        self._terminate()
        directory, self._dir = self._dir, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
