"""benchmarks/_delay_relay.py relays bytes in order and delays each direction by at least D.

The relay stands in for the network in benchmarks/tls_rtt.py; its numbers are only as honest
as these two properties. Only lower bounds on time are checked (never how fast).
"""

from __future__ import annotations

import socket
import threading
import time

from benchmarks._delay_relay import listen, serve

DELAY = 0.005


def _echo(seen: bytearray) -> int:
    """An echo server that also keeps what it received (to check one direction alone)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def run() -> None:
        conn, _ = listener.accept()
        listener.close()
        while data := conn.recv(65536):
            seen.extend(data)
            conn.sendall(data)
        conn.close()

    threading.Thread(target=run, daemon=True).start()
    return int(listener.getsockname()[1])


def _relay(target: int, stop: threading.Event) -> tuple[threading.Thread, int]:
    listener = listen()
    port = int(listener.getsockname()[1])
    thread = threading.Thread(
        target=serve, args=(listener, ("127.0.0.1", target), DELAY, stop), daemon=True
    )
    thread.start()
    return thread, port


def test_bytes_arrive_in_order_and_each_round_trip_pays_twice_the_delay() -> None:
    stop = threading.Event()
    seen = bytearray()
    relay, port = _relay(_echo(seen), stop)
    payload = bytes(range(256)) * 4096  # 1 MiB: many chunks in flight at once
    try:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.settimeout(30)  # a broken relay fails the test instead of hanging it
            for i in range(5):
                start = time.monotonic()
                sock.sendall(bytes([i]))
                assert sock.recv(1) == bytes([i])
                assert time.monotonic() - start >= 2 * DELAY
            sender = threading.Thread(target=sock.sendall, args=(payload,))
            sender.start()
            received = bytearray()
            while len(received) < len(payload):
                received += sock.recv(65536)
            sender.join()
            assert bytes(received) == payload  # both directions
            sock.shutdown(socket.SHUT_WR)  # end of stream is relayed both ways too
            assert sock.recv(1) == b""
    finally:
        stop.set()
        relay.join()
    assert bytes(seen) == bytes(range(5)) + payload  # towards the server alone
