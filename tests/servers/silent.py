"""A TCP server that accepts connections and never sends a byte.

Why: a MySQL client waits for the server's greeting after connect; a server that accepts
but never greets is how connect/read timeouts are tested without waiting for the OS.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time

from tests.servers._private import ClosingServer


class SilentTCPServer(ClosingServer):
    """Listens on 127.0.0.1:<free port>, accepts, reads and discards, never writes.

    Counts connections like :class:`tests.servers.http.CountingHTTPServer`: one is open
    from accept until the server reads EOF (or a reset) from the client.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._accepted = 0
        self._closing = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self._listener.listen(1024)
        self._listener.setblocking(False)
        self.host, self.port = self._listener.getsockname()[:2]
        # Self-pipe so close() wakes the selector immediately.
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(
            target=self._loop, name=f"SilentTCPServer:{self.port}", daemon=True
        )
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    @property
    def accepted(self) -> int:
        with self._lock:
            return self._accepted

    def wait_open(self, n: int, timeout: float = 5.0) -> int:
        """Poll until exactly ``n`` connections are open; returns the last count."""
        deadline = time.monotonic() + timeout
        while True:
            count = self.open_connections
            if count == n or time.monotonic() >= deadline:
                return count
            time.sleep(0.005)

    def drop_connections(self) -> None:
        """Hang up on every open connection, as a server's idle timeout does.

        Only shuts them down (safe from any thread): the clients read EOF, and the server's
        loop then reads its own EOF and forgets them."""
        with self._lock:
            conns = list(self._open)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _drop(self, conn: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn)
        conn.close()
        with self._lock:
            self._open.discard(conn)

    def _loop(self) -> None:
        while not self._closing.is_set():
            for key, _ in self._selector.select(timeout=1.0):
                sock = key.fileobj
                if sock is self._wake_r:
                    continue
                if sock is self._listener:
                    try:
                        conn, _addr = self._listener.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        continue  # e.g. EMFILE; the client sees a timeout, as intended
                    conn.setblocking(False)
                    with self._lock:
                        self._open.add(conn)
                        self._accepted += 1
                    self._selector.register(conn, selectors.EVENT_READ)
                    continue
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._drop(sock)

    def close(self) -> None:
        """Stop the thread, close every accepted socket and the listener (idempotent)."""
        if self._closing.is_set():
            return
        self._closing.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._thread.join(5.0)
        with self._lock:
            conns = list(self._open)
        for conn in conns:
            self._drop(conn)
        self._selector.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    def __repr__(self) -> str:
        return f"<SilentTCPServer {self.host}:{self.port} open={self.open_connections}>"


class StallingRelay(ClosingServer):
    """Relays a real server's greeting after ``greet_after`` seconds, then never answers.

    Why: a login can be held past its time by a peer that answers each step just before
    the socket timeout; only a bound on the login as a whole ends it on time. The client
    side's sockets are counted open until the relay reads EOF from them.
    """

    def __init__(self, target: tuple[str, int], greet_after: float) -> None:
        self._target = target
        self._greet_after = greet_after
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closing = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.host, self.port = self._listener.getsockname()[:2]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    def wait_open(self, n: int, timeout: float = 5.0) -> int:
        deadline = time.monotonic() + timeout
        while self.open_connections != n and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.open_connections

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            with self._lock:
                self._open.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with socket.create_connection(self._target, timeout=5) as upstream:
                greeting = upstream.recv(65536)
                if self._closing.wait(self._greet_after):
                    return
                conn.sendall(greeting)
                conn.settimeout(0.1)
                while not self._closing.is_set():  # swallow the login, answer nothing
                    try:
                        if not conn.recv(65536):
                            return
                    except TimeoutError:
                        continue
        except OSError:
            return
        finally:
            with self._lock:
                self._open.discard(conn)
            conn.close()

    def close(self) -> None:
        self._closing.set()
        self._thread.join(5.0)
        self._listener.close()
