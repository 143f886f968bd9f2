"""What the private test servers share: temp dirs, log tails, polling, lifecycle glue.

The database servers (MariaDB, PostgreSQL) differ in how they install, start and are
administered; creating their directory, tearing them down at exit and the context-manager
and restart plumbing are the same, so they live here once.
"""

from __future__ import annotations

import atexit
import contextlib
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

S = TypeVar("S", bound="ClosingServer")

#: The application user both database servers create and tests connect as.
TEST_USER = "lc"


def short_tmpdir(prefix: str) -> Path:
    """A temp dir short enough for a unix socket path (limit 107 bytes)."""
    base = tempfile.gettempdir()
    if len(base) > 60:
        base = "/tmp"
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def free_port() -> int:
    """A free TCP port on 127.0.0.1 *below* the kernel's ephemeral range.

    Why not bind(0): that hands out an ephemeral port, which a test opening thousands of
    client connections may then take as a local port while the server is stopped, so a
    ``restart()`` on the same port would fail. Ports under the ephemeral range are only
    ever taken by explicit binds.
    """
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    lo, hi = (10000, low - 1) if low > 11000 else (low, 65535)
    for _ in range(200):
        port = random.randint(lo, hi)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port found")


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def die_with_parent() -> None:
    """preexec_fn: SIGKILL the server if the test process dies without running atexit.

    It runs after subprocess has switched uid (a credential change clears the setting),
    and only ever in the child.
    """
    import ctypes

    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def wait_for_count(count: Callable[[], int], n: int, timeout: float) -> int:
    """Poll ``count()`` until it is ``n``; returns the last count.

    Why poll: servers tear a session down asynchronously, a few ms after the client
    closes. On timeout the (different) count is returned so the caller's
    ``assert ... == n`` shows it.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = count()
        if value == n or time.monotonic() >= deadline:
            return value
        time.sleep(0.01)


class ClosingServer:
    """``with Server() as server:`` closes it on exit."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: S) -> S:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


_live: weakref.WeakSet[PrivateServer] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for server in list(_live):
        with contextlib.suppress(Exception):
            server.close()


class PrivateServer(ClosingServer):
    """A server process with its own directory, closed at exit if a test forgot.

    Subclasses set ``self.dir`` (via :meth:`_make_dir`), ``self.port``, ``self._proc``,
    ``self._lock`` and ``self.start_seconds``; name their error class, their log file and
    the log text of a taken port; and implement ``_spawn()`` (start the process and wait
    until it serves), ``stop()`` and ``_server_options()`` (what ``restart()`` updates).
    """

    dir: Path
    port: int
    start_seconds: float | None
    _proc: subprocess.Popen[bytes] | None
    _lock: threading.RLock
    error: type[Exception] = RuntimeError
    port_in_use_text = "already in use"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _server_log(self) -> Path:
        raise NotImplementedError

    def _spawn(self) -> None:
        raise NotImplementedError

    def start(self) -> float:
        """Start the server (same port and data directory as before) and wait until it
        serves. Returns the start time in seconds. The first start picks a free port, and
        only then retries with another one if the port was taken in the meantime."""
        with self._lock:
            if self.running:
                raise self.error("server already running")
            t0 = time.monotonic()
            first = self.port == 0
            for attempt in range(5):
                if first:
                    self.port = free_port()
                try:
                    self._spawn()
                    break
                except self.error:
                    in_use = self.port_in_use_text in log_tail(self._server_log(), 10)
                    if not in_use or attempt == 4:
                        raise
                    time.sleep(0.2)
            self.start_seconds = time.monotonic() - t0
            return self.start_seconds

    def stop(self, *, kill: bool = False, timeout: float = 30.0) -> None:
        raise NotImplementedError

    def _server_options(self) -> dict[str, Any]:
        raise NotImplementedError

    # What the client contract (tests/clients.py) asks of every database server, whatever
    # its flavour: unclean ends counted, sessions ended, and sessions checked by id.

    def unclean_closes(self) -> int:
        """How many sessions ended without the client's goodbye (COM_QUIT / Terminate).

        A server-wide count: on a shared server an earlier test's session that ends
        uncleanly meanwhile moves it too. Prefer :meth:`unclean_mark` /
        :meth:`unclean_closes_since` in tests.
        """
        raise NotImplementedError

    def unclean_mark(self) -> Any:
        """Taken at a test's start, for :meth:`unclean_closes_since` at its end."""
        raise NotImplementedError

    def unclean_closes_since(self, mark: Any) -> int:
        """Unclean ends since ``mark`` (:meth:`unclean_mark`) of sessions that were not
        open when it was taken, where the server can tell whose session ended
        (PostgreSQL's log names the backend pid); MariaDB's ``Aborted_clients`` cannot
        name the session, so there it is the server-wide count's growth."""
        raise NotImplementedError

    #: The SQL a client runs to learn its session's id, as :meth:`end_session` takes it.
    session_id_sql = ""

    def end_session(self, session_id: int) -> Any:
        """End one session from the server side (a failover, an idle timeout, a kill)."""
        raise NotImplementedError

    # Sessions by id, not by count. A count taken before a handler runs is thrown off by a
    # session an earlier test left that ends meanwhile (the count drops below it and never
    # comes back) or by a late one appearing; ids from a snapshot are not. MariaDB's ids
    # only grow; a PostgreSQL pid is not handed out again until the kernel's pid counter
    # wraps, so a new session never hides behind an id of the snapshot.

    #: The key of a :meth:`client_sessions` row holding the id :meth:`end_session` takes.
    session_key = "id"

    def client_sessions(self, user: str | None = TEST_USER) -> list[dict[str, Any]]:
        """Client sessions of ``user`` (``None``: any user), the admin's excluded."""
        raise NotImplementedError

    def session_ids(self, user: str | None = TEST_USER) -> frozenset[int]:
        """The ids of ``user``'s sessions now: the snapshot the ``wait_new_*`` take."""
        return frozenset(s[self.session_key] for s in self.client_sessions(user))

    def new_sessions(
        self, before: AbstractSet[int], user: str | None = TEST_USER
    ) -> list[dict[str, Any]]:
        """``user``'s sessions whose id is not in the snapshot ``before``."""
        return [s for s in self.client_sessions(user) if s[self.session_key] not in before]

    def wait_new_sessions_gone(
        self, before: AbstractSet[int], user: str | None = TEST_USER, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """Poll until no session of ``user`` remains that is not in the snapshot
        ``before`` (:meth:`session_ids`); returns the ones left, ``[]`` once all ended.

        ``assert server.wait_new_sessions_gone(before) == []`` then names what stayed open.
        Sessions of the snapshot may end or stay: they are not this test's.
        """
        return self._wait_new(before, lambda new: not new, user, timeout)

    def wait_new_sessions(
        self,
        before: AbstractSet[int],
        n: int,
        user: str | None = TEST_USER,
        timeout: float = 5.0,
    ) -> list[dict[str, Any]]:
        """Poll until exactly ``n`` sessions of ``user`` exist that are not in the
        snapshot ``before``; returns them (on timeout the last, different, list)."""
        return self._wait_new(before, lambda new: len(new) == n, user, timeout)

    def wait_session_gone(self, session_id: int, timeout: float = 5.0) -> bool:
        """Poll until session ``session_id`` (any user's) has ended; False if it is still
        there."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if session_id not in self.session_ids(user=None):
                return True
            time.sleep(0.01)
        return False

    def _wait_new(
        self,
        before: AbstractSet[int],
        done: Callable[[list[dict[str, Any]]], bool],
        user: str | None,
        timeout: float,
    ) -> list[dict[str, Any]]:
        # A bare int here is a count from the old pattern, not a snapshot: refuse it.
        if not isinstance(before, AbstractSet):
            raise TypeError(f"before must be a snapshot from session_ids(), not {before!r}")
        deadline = time.monotonic() + timeout
        while True:
            new = self.new_sessions(before, user)
            if done(new) or time.monotonic() >= deadline:
                return new
            time.sleep(0.01)

    def _make_dir(self, prefix: str) -> None:
        self.dir = short_tmpdir(prefix)
        _live.add(self)

    def restart(self, **changes: Any) -> float:
        """Stop, optionally change server options, start again on the same port."""
        with self._lock:
            self.stop()
            self._server_options().update(changes)
            return self.start()

    def close(self) -> None:
        """Stop the server and remove its directory (idempotent)."""
        with self._lock:
            self.stop()
            if getattr(self, "dir", None) is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
            _live.discard(self)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} 127.0.0.1:{self.port} {state} dir={self.dir}>"


class TemplateDir:
    """A data directory built once per process (an install takes a second or more) and
    copied for every instance; removed at exit."""

    def __init__(self, prefix: str, build: Callable[[Path], None]) -> None:
        self._prefix = prefix
        self._build = build
        self._lock = threading.Lock()
        self._root: Path | None = None

    def datadir(self) -> Path:
        with self._lock:
            if self._root is None:
                root = short_tmpdir(self._prefix)
                try:
                    self._build(root)
                except BaseException:
                    shutil.rmtree(root, ignore_errors=True)
                    raise
                self._root = root
                atexit.register(shutil.rmtree, root, True)
            return self._root / "data"
