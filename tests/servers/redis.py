"""A private redis-server on a free loopback port, for the redis-py tests.

Why private: the machine's own redis on 6379 may hold other clients, so counting sessions
there (``INFO clients``, ``CLIENT LIST``) would prove nothing. This one has no persistence,
``maxclients`` high enough for the tests that open more than 1,024 clients, and is
administered over its own socket (raw RESP: the admin connection must not be a redis-py
client, which lambda_conn would track).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from tests.servers._private import PrivateServer, die_with_parent, log_tail, wait_for_count

MISSING_MESSAGE = (
    "redis-server is not installed: install Debian's redis-server (apt-get install "
    "redis-server); .ci/run does this where it is missing"
)


class RedisError(RuntimeError):
    pass


class RedisNotInstalled(RedisError):
    pass


def find_redis_server() -> str:
    path = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if path is None:
        raise RedisNotInstalled(MISSING_MESSAGE)
    return path


class RedisServer(PrivateServer):
    """``redis-server`` with its own directory and port; ``query()`` speaks RESP to it."""

    error = RedisError
    port_in_use_text = "Address already in use"
    host = "127.0.0.1"

    def __init__(self, *, maxclients: int = 4000, start: bool = True) -> None:
        self.binary = find_redis_server()
        self.options: dict[str, object] = {"maxclients": maxclients}
        self.port = 0
        self.start_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()
        self._make_dir("lc-redis-")
        self.log = self.dir / "redis.log"
        if start:
            try:
                self.start()
            except BaseException:
                self.close()
                raise

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def _server_log(self) -> Path:
        return self.log

    def _server_options(self) -> dict[str, object]:
        return self.options

    def command(self) -> list[str]:
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--dir",
            str(self.dir),
            "--logfile",
            str(self.log),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            *(arg for key, value in self.options.items() for arg in (f"--{key}", str(value))),
        ]

    def _spawn(self) -> None:
        main = threading.current_thread() is threading.main_thread()
        self._proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=str(self.dir),
            start_new_session=True,
            preexec_fn=die_with_parent if main else None,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                proc, self._proc = self._proc, None
                raise RedisError(
                    f"redis-server exited with rc={proc.returncode}:\n{log_tail(self.log)}"
                )
            with contextlib.suppress(OSError):
                if self.query("PING") == "PONG":
                    return
            time.sleep(0.02)
        self.stop(kill=True)
        raise RedisError(f"redis-server did not answer PING:\n{log_tail(self.log)}")

    def stop(self, *, kill: bool = False, timeout: float = 30.0) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is None or proc.poll() is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # ------------------------------------------------------------------ administration

    def query(self, *args: str) -> object:
        """One command over a fresh raw socket; the reply decoded (str, int, list, None)."""
        with socket.create_connection((self.host, self.port), timeout=5) as sock:
            payload = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
            sock.sendall(payload.encode())
            reader = sock.makefile("rb")
            try:
                return _read_reply(reader)
            finally:
                reader.close()

    def client_names(self) -> list[str]:
        """``CLIENT LIST`` minus the admin connection asking: one line per client session."""
        listing = self.query("CLIENT", "LIST")
        assert isinstance(listing, str), listing
        lines = [line for line in listing.splitlines() if line]
        return [line for line in lines if " cmd=client|list " not in f" {line} "]

    def clients(self) -> int:
        """Connected client sessions, not counting the one asking."""
        return len(self.client_names())

    def wait_clients(self, n: int, timeout: float = 10.0) -> int:
        return wait_for_count(self.clients, n, timeout)

    def drop_connections(self) -> None:
        """End every other client session, as a server restart or idle timeout would."""
        self.query("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        self.wait_clients(0)


def _read_reply(reader: object) -> object:
    line = reader.readline()  # type: ignore[attr-defined]
    if not line:
        raise OSError("redis closed the admin connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = reader.read(size + 2)  # type: ignore[attr-defined]
        return bytes(data[:-2]).decode()
    if kind == b"*":
        return [_read_reply(reader) for _ in range(int(rest))]
    raise RedisError(f"unexpected reply {line!r}")
