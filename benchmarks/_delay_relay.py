"""A loopback TCP relay that delays every chunk by a fixed one-way time, in order.

netem is not available on every kernel, and a loopback connect has no round trip to pay,
which is what dominates a real Lambda-to-RDS connect. This relay stands in for the network:
each chunk read from one side is sent to the other no earlier than ``delay`` seconds after
it was read, in the order read, in both directions. One thread, ``select.select`` (its
timeout has microsecond resolution; epoll's is milliseconds), timer slack set to 1 ns on
Linux so short sleeps are not rounded up. Run it in a process of its own
(``python benchmarks/_delay_relay.py TARGET_PORT DELAY_MS``; it prints its port) so its
CPU does not compete with the measured client for the GIL.
"""

from __future__ import annotations

import collections
import select
import socket
import sys
import threading
import time


def _tight_timer_slack() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK = 29, 1 ns
    except (OSError, AttributeError):
        pass


class _Pipe:
    """One direction: chunks read from ``src``, due to be written to ``dst``."""

    __slots__ = ("dst", "eof", "queue", "src")

    def __init__(self, src: socket.socket, dst: socket.socket) -> None:
        self.src = src
        self.dst = dst
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.eof = False  # the source ended (None queued)


def serve(
    listener: socket.socket,
    target: tuple[str, int],
    delay: float,
    stop: threading.Event | None = None,
) -> None:
    """Relay every accepted connection to ``target`` until killed, or until ``stop`` is set.

    With ``stop`` (tests), it is looked at every 50 ms and everything is closed on the way out.
    """
    _tight_timer_slack()
    pipes: list[_Pipe] = []
    by_src: dict[socket.socket, _Pipe] = {}
    while stop is None or not stop.is_set():
        now = time.monotonic()
        timeout = None if stop is None else 0.05
        for pipe in pipes:
            if pipe.queue:
                wait = max(0.0, pipe.queue[0][0] - now)
                timeout = wait if timeout is None else min(timeout, wait)
        readers = [listener] + [p.src for p in pipes if not p.eof]
        readable, _, _ = select.select(readers, [], [], timeout)
        now = time.monotonic()
        for sock in readable:
            if sock is listener:
                client, _ = listener.accept()
                server = socket.create_connection(target)
                for s in (client, server):
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for pipe in (_Pipe(client, server), _Pipe(server, client)):
                    pipes.append(pipe)
                    by_src[pipe.src] = pipe
                continue
            pipe = by_src[sock]
            try:
                data = sock.recv(262144)
            except OSError:
                data = b""
            pipe.queue.append((now + delay, data or None))
            pipe.eof = not data
        now = time.monotonic()
        for pipe in pipes:
            while pipe.queue and pipe.queue[0][0] <= now:
                _, chunk = pipe.queue.popleft()
                try:
                    if chunk is None:
                        pipe.dst.shutdown(socket.SHUT_WR)
                    else:
                        pipe.dst.sendall(chunk)
                except OSError:
                    pipe.queue.clear()
                    pipe.eof = True
        done = [p for p in pipes if p.eof and not p.queue]
        for pipe in done:
            if by_src.get(pipe.src) is not pipe:
                continue  # its pair was closed already
            other = by_src.get(pipe.dst)
            if other is not None and other.eof and not other.queue:
                for p in (pipe, other):
                    pipes.remove(p)
                    del by_src[p.src]
                    p.src.close()
    for pipe in pipes:
        pipe.src.close()
    listener.close()


def listen() -> socket.socket:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    return listener


def main() -> None:
    target_port, delay_ms = int(sys.argv[1]), float(sys.argv[2])
    listener = listen()
    print(listener.getsockname()[1], flush=True)
    serve(listener, ("127.0.0.1", target_port), delay_ms / 1000)


if __name__ == "__main__":
    main()
