"""What a per-invocation MySQL TLS connect costs when the network has a round trip.

    python3 benchmarks/tls_rtt.py                       # needs mariadbd
    python3 benchmarks/tls_rtt.py --repeat 150 --out /tmp/tls_rtt.md

On loopback a connect pays no round trip; from Lambda to RDS in one region a round trip is
typically 0.2-1 ms, a plaintext MySQL connect pays about three (TCP, greeting, auth) and
TLS 1.3 resumption about one more. Between the client and the private MariaDB (TLS on) this
puts relays (benchmarks/_delay_relay.py, each a process of its own) that delay every chunk
by a fixed one-way time D; D = 0 is the relay alone. Every case goes through the same relay
for a given D, and the cases and delays are interleaved in one run. It first checks that the
relay adds the delay it claims (a 1-byte echo round trip through it, against the echo
direct) and, afterwards, that sessions resumed through it (counted per connect). Each
sample is ``connect()`` + ``close()``. Nothing here is asserted in tests.
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _common import ROOT

DELAYS_MS = (0.0, 0.1, 0.25, 0.5, 1.0)
DIRECT = -1.0  # the row without a relay: loopback straight to the server
# One-way flights per connect: connects through a relay with a delay so long (per chunk,
# each way) that CPU is noise; the growth over D = 0, divided by D, counts the flights.
FLIGHT_D_MS = 20.0
FLIGHT_REPEAT = 8
CASES = {
    "plain": "PyMySQL, no TLS",
    "resumed": "RDSConnector.connect(), TLS, session resumed (shared context)",
    "full": "RDSConnector.connect(), TLS, resume_tls=False",
    "defaults": "PyMySQL defaults (TLS preferred, new SSLContext per connect)",
}
RELAY = Path(__file__).with_name("_delay_relay.py")


def start_relay(target_port: int, delay_ms: float) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, str(RELAY), str(target_port), str(delay_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def echo_server() -> int:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def serve() -> None:
        while True:
            conn, _ = listener.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while data := conn.recv(65536):
                conn.sendall(data)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return int(listener.getsockname()[1])


def echo_rtt_us(port: int, n: int = 300) -> float:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        samples = []
        for _ in range(n):
            start = time.perf_counter()
            sock.sendall(b"x")
            sock.recv(1)
            samples.append((time.perf_counter() - start) * 1e6)
    return statistics.median(samples)


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=100, help="connects per case and delay")
    parser.add_argument("--out", help="write the markdown here too")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import pymysql

    from lambda_conn import RDSConnector
    from tests.servers.mariadb import MariaDBServer

    load = os.getloadavg()
    started = time.monotonic()
    echo = echo_server()
    relays: dict[float, tuple[subprocess.Popen[str], int]] = {}
    lines: list[str] = []
    with MariaDBServer(tls=True, max_connections=500) as server:
        assert server.tls is not None
        version = server.query("SELECT VERSION()")[0][0]
        try:
            # The relay's own delay, measured: echo round trip through a relay minus direct.
            direct = echo_rtt_us(echo)
            check: dict[float, float] = {}
            for d in DELAYS_MS:
                proc, port = start_relay(echo, d)
                check[d] = echo_rtt_us(port)
                proc.kill()
                proc.wait()
            for d in (*DELAYS_MS, FLIGHT_D_MS):
                relays[d] = start_relay(server.port, d)
            base = {"user": server.user, "password": server.password, "database": server.database}

            def make(case: str, port: int) -> Any:
                if case == "plain":
                    return lambda: pymysql.connect(
                        host="127.0.0.1", port=port, ssl_disabled=True, **base
                    )
                if case == "defaults":
                    return lambda: pymysql.connect(host="127.0.0.1", port=port, **base)
                rds = RDSConnector(
                    "127.0.0.1",
                    port=port,
                    ssl_ca=server.tls.ca,
                    resume_tls=case == "resumed",
                    **base,
                )
                return rds.connect

            connects = {(d, c): make(c, relays[d][1]) for d in DELAYS_MS for c in CASES}
            connects.update({(DIRECT, c): make(c, server.port) for c in CASES})
            samples: dict[tuple[float, str], list[float]] = {k: [] for k in connects}
            tls_seen = {k: 0 for k in connects}
            reused = {k: 0 for k in connects}
            for connect in connects.values():  # warm-up: first session, imports
                for _ in range(3):
                    connect().close()
            ticks = {d: cpu_ticks(relays[d][0].pid) for d in DELAYS_MS}
            for _ in range(args.repeat):
                for key, connect in connects.items():
                    start = time.perf_counter()
                    conn = connect()
                    connected = time.perf_counter()
                    sock = conn._sock  # read between the two timed parts
                    tls_seen[key] += isinstance(sock, ssl.SSLSocket)
                    reused[key] += isinstance(sock, ssl.SSLSocket) and sock.session_reused
                    closing = time.perf_counter()
                    conn.close()
                    end = time.perf_counter()
                    samples[key].append((connected - start + end - closing) * 1e3)
            flight_ms = {c: [] for c in CASES}  # not interleaved with the rest: 20 ms a chunk
            slow = {c: make(c, relays[FLIGHT_D_MS][1]) for c in CASES}
            for _ in range(FLIGHT_REPEAT):
                for case, connect in slow.items():
                    start = time.perf_counter()
                    connect().close()
                    flight_ms[case].append((time.perf_counter() - start) * 1e3)
            relay_cpu = {
                d: (cpu_ticks(relays[d][0].pid) - ticks[d])
                / os.sysconf("SC_CLK_TCK")
                * 1000
                / (args.repeat * len(CASES))
                for d in DELAYS_MS
            }
        finally:
            for proc, _ in relays.values():
                proc.kill()
                proc.wait()
    elapsed = time.monotonic() - started
    med = {k: statistics.median(v) for k, v in samples.items()}
    n = args.repeat
    lines += [
        "## Per-invocation MySQL connect with a network round trip (relay with a fixed delay)",
        "",
        f"`python3 benchmarks/tls_rtt.py --repeat {n}` in {elapsed:.0f} s, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; Python "
        f"{sys.version.split()[0]}, {ssl.OPENSSL_VERSION}; private MariaDB {version} with TLS "
        f"(TLS 1.3, verified against its CA); load average {load[0]:.1f} / {load[1]:.1f} at the "
        f"start on {os.cpu_count()} cores. Each sample: `connect()` + `close()` through a relay "
        "process that delays every chunk by D in each direction, in order "
        "(benchmarks/_delay_relay.py); cases and delays interleaved, "
        f"{n} connects per cell; medians in ms.",
        "",
        "| one-way D (RTT) | relay check: echo RTT added (ms) | "
        + " | ".join(CASES.values())
        + " | resumed / plaintext | defaults / resumed | resumed connects"
        + " | relay CPU per connect (ms) |",
        "| --- | ---: | " + " | ".join("---:" for _ in CASES) + " | ---: | ---: | ---: | ---: |",
    ]
    cells = " | ".join(f"{med[(DIRECT, c)]:.2f}" for c in CASES)
    lines.append(
        f"| no relay (loopback) | - | {cells} | "
        f"{med[(DIRECT, 'resumed')] / med[(DIRECT, 'plain')]:.2f}x | "
        f"{med[(DIRECT, 'defaults')] / med[(DIRECT, 'resumed')]:.1f}x | "
        f"{reused[(DIRECT, 'resumed')]}/{n} | - |"
    )
    for d in DELAYS_MS:
        cells = " | ".join(f"{med[(d, c)]:.2f}" for c in CASES)
        lines.append(
            f"| {d:g} ms ({2 * d:g} ms) | {(check[d] - direct) / 1000:.3f} | {cells} | "
            f"{med[(d, 'resumed')] / med[(d, 'plain')]:.2f}x | "
            f"{med[(d, 'defaults')] / med[(d, 'resumed')]:.1f}x | "
            f"{reused[(d, 'resumed')]}/{n} (TLS {tls_seen[(d, 'resumed')]}, "
            f"defaults TLS {tls_seen[(d, 'defaults')]}, full reused "
            f"{reused[(d, 'full')]}) | {relay_cpu[d]:.3f} |"
        )
    lines += [
        "",
        f"Relay check: a 1-byte echo round trip direct took {direct / 1000:.3f} ms (median of "
        "300); the column is the round trip through the relay minus that, which should be at "
        "least 2D (the remainder is the relay's own hop and its wake-up latency).",
        "",
    ]
    low, high = DELAYS_MS[0], DELAYS_MS[-1]
    rtt_ms = (check[high] - check[low]) / 1000  # measured round-trip time added, low -> high
    trips = {c: (med[(high, c)] - med[(low, c)]) / rtt_ms for c in CASES}
    lines += [
        f"Round trips each connect pays (its median's growth from D = {low:g} to {high:g} ms, over "
        f"the measured round-trip growth of {rtt_ms:.3f} ms): "
        + ", ".join(f"{CASES[c]}: {trips[c]:.1f}" for c in CASES)
        + ".",
        "",
    ]
    # Flights: what the relay delays (the application's chunks; the kernel completes TCP's
    # handshake with the relay undelayed). A real network adds SYN, SYN-ACK and the ACK
    # the server's accept waits for before it sends the greeting: 3 more one-way trips.
    flights = {c: (statistics.median(flight_ms[c]) - med[(0.0, c)]) / FLIGHT_D_MS for c in CASES}
    real = {c: round(flights[c]) + 3 for c in CASES}
    floor = real["resumed"] / real["plain"]
    # Where 1.5x would be met: T(R) = flights/2 * R + CPU, the CPU taken from the loopback
    # row (client and server CPU are on the critical path one after the other).
    cpu_t, cpu_p = med[(DIRECT, "resumed")], med[(DIRECT, "plain")]
    n_t, n_p = real["resumed"] / 2, real["plain"] / 2
    crossing = (cpu_t - 1.5 * cpu_p) / (1.5 * n_p - n_t) if 1.5 * n_p > n_t else float("inf")
    lines += [
        f"One-way flights each connect waits for (through a relay delaying each chunk by "
        f"{FLIGHT_D_MS:g} ms each way, median of {FLIGHT_REPEAT}, growth over D = 0 divided "
        "by D): "
        + ", ".join(f"{CASES[c]}: {flights[c]:.2f}" for c in CASES)
        + ". With TCP's handshake (SYN, SYN-ACK, the ACK the greeting waits for) on a real "
        "network: "
        + ", ".join(f"{c} {real[c]} ({real[c] / 2:g} round trips)" for c in CASES)
        + f". So the latency-bound floor of resumed / plaintext is {real['resumed']}/"
        f"{real['plain']} = {floor:.2f}x. With the loopback row's medians as the CPU on the "
        f"critical path ({cpu_t:.2f} ms resumed, {cpu_p:.2f} ms plaintext), 1.5x needs a "
        f"round trip of at least ({cpu_t:.2f} - 1.5 x {cpu_p:.2f}) / (1.5 x {n_p:g} - "
        f"{n_t:g}) = {crossing:.2f} ms.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
