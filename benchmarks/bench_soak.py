"""Single-environment soak throughput against the raw awslambdaric loop, in one run.

Run: python benchmarks/bench_soak.py [--n 1000] [--rounds 9] [--no-fleet] [--baseline TREE]

"raw loop": the real ``python -m awslambdaric`` bootstrap, with the environment the local
runtime gives it, against a minimal Runtime API (one thread, one keep-alive connection:
``GET /next`` hands out the same event, ``POST .../response`` gets 202, nothing else is
checked, measured or frozen). "soak": ``lambda_conn.local.soak`` of the same trivial
handler (``_soak_trivial.handler``), with its per-invocation descriptor and memory
measurement; each next invocation is dispatched as the runtime asks for it, so there is
no idle gap and nothing is frozen between them (``LocalLambda`` freezes an environment
that waits). Both rates are warm: from the first
invocation's end to the last's, so the cold start counts in neither.

The two run in turn, A B B A A B ..., ``--rounds`` pairs; the table gives each side's
median and the ratio of the medians, with the median of the pair-by-pair ratios (a pair
ran within seconds, so it shares the machine's load). The supervisor's CPU time per
invocation (this process: user + sys) is given beside each, a figure that does not
depend on how busy the other cores are. In the same rounds (unless ``--no-fleet``),
``fleet_soak`` of the same handler at concurrency 1, 2, 4 and 8, warm from the end of
its invocations (most cold starts left out), with each median's ratio to concurrency 1.
``--split`` places the two processes of each case on cores of their own: the supervisor
(or the minimal server) on core 0, the runtime on core 1, as a machine does where
neither waits for the other's core. Unpinned, the kernel sometimes keeps the raw loop's
two processes on one core (its rate then is the one-core rate) and splits the soak's,
and the ratio moves with that choice; ``taskset -c 0`` gives the one-core figure.
``--baseline TREE`` adds the soak as an older checkout's supervisor runs it (``git
archive REV lambda_conn | tar -x -C TREE``), in a fresh interpreter, in the same rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _common import cpu_s  # noqa: E402

if TYPE_CHECKING:
    from lambda_conn.local import InvocationRecord

HANDLER = "_soak_trivial.handler"
FLEET = (1, 2, 4, 8)
EVENT = {"bench": 1}
TITLE = "Single-environment soak against the raw awslambdaric loop"


@dataclass(frozen=True)
class Sample:
    rate: float  # warm invocations per second
    cpu_us: float  # this process's user + sys per warm invocation


class MinimalRuntimeApi:
    """The least a Runtime API can be and still drive awslambdaric: the raw loop's server."""

    def __init__(self, n: int, payload: bytes) -> None:
        self._n = n
        self._payload = payload
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.times: list[float] = []
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def address(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"{host}:{port}"

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._sock.close()

    def _next_reply(self, i: int) -> bytes:
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"Lambda-Runtime-Aws-Request-Id: req-{i}\r\n"
            "Lambda-Runtime-Deadline-Ms: 99999999999999\r\n"
            "Lambda-Runtime-Invoked-Function-Arn: "
            "arn:aws:lambda:us-east-1:000000000000:function:bench\r\n"
            "Lambda-Runtime-Trace-Id: Root=1-00000000-000000000000000000000000;Sampled=0\r\n"
            f"Content-Length: {len(self._payload)}\r\n\r\n"
        )
        return head.encode() + self._payload

    def _serve(self) -> None:
        accepted = b"HTTP/1.1 202 Accepted\r\nContent-Length: 15\r\n\r\n" + b'{"status":"OK"}'
        i = 0
        try:
            while True:
                conn, _ = self._sock.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                reader = conn.makefile("rb")
                while True:
                    line = reader.readline()
                    if not line:
                        break
                    length = 0
                    while True:
                        header = reader.readline()
                        if header in (b"\r\n", b""):
                            break
                        if header[:15].lower() == b"content-length:":
                            length = int(header[15:])
                    if length:
                        reader.read(length)
                    if line.startswith(b"GET"):
                        if i >= self._n:
                            self.done.set()
                            return
                        conn.sendall(self._next_reply(i))
                        i += 1
                    else:
                        self.times.append(time.perf_counter())
                        conn.sendall(accepted)
        except OSError:
            return


SUPERVISOR_CORE, RUNTIME_CORE = 0, 1


def _run_on(core: int | None) -> None:
    """This thread (and what it starts from now on) on ``core``; None: on every core."""
    os.sched_setaffinity(0, range(os.cpu_count() or 1) if core is None else {core})


def raw_loop(n: int, split: bool = False) -> Sample:
    from lambda_conn.local._config import FunctionConfig

    server = MinimalRuntimeApi(n, json.dumps(EVENT).encode())
    if split:
        _run_on(SUPERVISOR_CORE)  # the server's thread inherits it
    server.start()
    if split:
        _run_on(RUNTIME_CORE)  # the runtime inherits it at fork
    config = FunctionConfig.create(
        HANDLER,
        handler_dir=HERE,
        memory_mb=128,
        timeout_s=3.0,
        env=None,
        function_name=None,
        init_timeout_s=10.0,
    )
    proc = subprocess.Popen(
        [config.python, "-m", "awslambdaric", config.spec.lambda_form],
        cwd=config.task_root,
        env=config.environ(server.address),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if split:
        _run_on(None)
    try:
        # CPU from the first response on, as for the soak (the cold start is left out).
        while not server.times:
            time.sleep(0.001)
        cpu0 = cpu_s()
        if not server.done.wait(120):
            raise RuntimeError("the raw loop did not finish in 120 s")
        cpu = cpu_s() - cpu0
    finally:
        proc.kill()
        proc.wait()
        server.close()
    times = server.times
    return Sample((len(times) - 1) / (times[-1] - times[0]), cpu / (len(times) - 1) * 1e6)


def soak_loop(n: int, split: bool = False, spin: bool = True) -> Sample:
    from lambda_conn.local import soak

    times: list[float] = []
    cpu: list[float] = []

    def progress(done: int, record: InvocationRecord) -> None:
        if done == 1 and split:  # the runtime has started (on RUNTIME_CORE): serve from ours
            _run_on(SUPERVISOR_CORE)
        times.append(time.perf_counter())
        if done in (1, n):
            cpu.append(cpu_s())

    if split:
        _run_on(RUNTIME_CORE)  # where soak() forks the runtime

    report = soak(
        HANDLER,
        n,
        event=EVENT,
        handler_dir=HERE,
        output=subprocess.DEVNULL,
        progress=progress,
        max_init_failures=1,
        spin=spin,
    )
    if split:
        _run_on(None)
    if report.failed:
        raise RuntimeError(f"soak failed: {report.summary.failures_by_type}")
    return Sample((n - 1) / (times[-1] - times[0]), (cpu[-1] - cpu[0]) / (n - 1) * 1e6)


def baseline_loop(n: int, tree: Path, split: bool = False) -> Sample:
    """``soak_loop`` in a fresh interpreter whose ``lambda_conn`` comes from ``tree`` (an
    older checkout: the supervisor before a change, in the same interleaved run)."""
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); import lambda_conn.local; "
        "assert lambda_conn.local.__file__.startswith(sys.argv[1]), lambda_conn.local.__file__; "
        "sys.path.insert(1, sys.argv[2]); import bench_soak; "
        "s = bench_soak.soak_loop(int(sys.argv[3]), sys.argv[4] == '1'); print(s.rate, s.cpu_us)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tree), str(HERE), str(n), "1" if split else "0"],
        cwd=HERE,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return Sample(float(out[-2]), float(out[-1]))


def fleet_loop(n: int, concurrency: int) -> Sample:
    """``fleet_soak`` of the same handler, its rate over the second half of the
    invocations: environments are created while every warm one is busy, so a few cold
    starts happen late; most happen at the start and are left out."""
    from lambda_conn.local import fleet_soak

    times: list[float] = []

    def progress(done: int, record: InvocationRecord) -> None:
        times.append(time.perf_counter())

    cpu0 = cpu_s()  # this process's, and the shards' own as they report it
    report = fleet_soak(
        HANDLER,
        n,
        concurrency=concurrency,
        event=EVENT,
        handler_dir=HERE,
        output=subprocess.DEVNULL,
        progress=progress,
        max_init_failures=1,
    )
    cpu = cpu_s() - cpu0 + (report.fleet.shard_cpu_s or 0.0)
    if report.summary.failed:
        raise RuntimeError(f"fleet soak failed: {report.summary.failures_by_type}")
    half = len(times) // 2
    return Sample((len(times) - 1 - half) / (times[-1] - times[half]), cpu / n * 1e6)


def interleaved(cases: dict[str, Callable[[], Sample]], rounds: int) -> dict[str, list[Sample]]:
    """Each case once per round, the order reversed every other round (A B, B A, ...)."""
    names = list(cases)
    out: dict[str, list[Sample]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            out[name].append(cases[name]())
            print(f"  round {r + 1}/{rounds} {name}: {out[name][-1].rate:,.0f}/s", flush=True)
    return out


def report(samples: dict[str, list[Sample]], n: int, rounds: int, split: bool = False) -> str:
    raw = samples["raw loop"]
    fleet = {name: rows for name, rows in samples.items() if name.startswith("fleet")}
    raw_median = statistics.median(s.rate for s in raw)
    flags = " --split" if split else ""
    lines = [
        f"### {TITLE}",
        "",
        f"`python benchmarks/bench_soak.py --n {n} --rounds {rounds}{flags}`: "
        f"{rounds} interleaved rounds of {n:,} invocations each, warm rates (first invocation's "
        "end to the last's)"
        + ("; supervisor or minimal server on core 0, runtime on core 1." if split else "."),
        "",
        "| case | median invocations/s | min | max | supervisor CPU per invocation (us) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, rows in samples.items():
        if name in fleet:
            continue
        rates = [s.rate for s in rows]
        lines.append(
            f"| {name} | {statistics.median(rates):,.0f} | {min(rates):,.0f} | "
            f"{max(rates):,.0f} | {statistics.median(s.cpu_us for s in rows):.0f} |"
        )
    lines.append("")
    for name, rows in samples.items():
        if name in fleet or name == "raw loop":
            continue
        median = statistics.median(s.rate for s in rows)
        pairs = statistics.median(a.rate / b.rate for a, b in zip(rows, raw, strict=True))
        lines.append(
            f"{name} / raw loop: {median / raw_median:.0%} (ratio of the medians); "
            f"median of the {rounds} pair-by-pair ratios: {pairs:.0%}."
        )
    if fleet:
        base = statistics.median(s.rate for s in fleet["fleet, concurrency 1"])
        lines += [
            "",
            f"`fleet_soak` in the same rounds, {os.cpu_count()} cores (rate over the second "
            "half of each soak's invocations; CPU per invocation counts the cold starts "
            "and the shards' own CPU, not their runtimes'):",
            "",
            "| concurrency | median invocations/s | min | max | ratio to concurrency 1 "
            "| supervisor CPU per invocation (us) |",
            "| ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, rows in fleet.items():
            rates = [s.rate for s in rows]
            median = statistics.median(rates)
            lines.append(
                f"| {name.rsplit(' ', 1)[1]} | {median:,.0f} | {min(rates):,.0f} | "
                f"{max(rates):,.0f} | {median / base:.2f}x | "
                f"{statistics.median(s.cpu_us for s in rows):.0f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="invocations per run")
    parser.add_argument("--rounds", type=int, default=9, help="runs of each case, interleaved")
    parser.add_argument(
        "--no-fleet", action="store_true", help="skip fleet_soak at concurrency 1, 2, 4, 8"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        action="append",
        default=[],
        metavar="TREE",
        help="also soak with the lambda_conn of this checkout (git archive REV); repeatable",
    )
    parser.add_argument(
        "--split",
        action="store_true",
        help="supervisor (or minimal server) on core 0, runtime on core 1, in every case",
    )
    args = parser.parse_args(argv)
    if args.split and len(os.sched_getaffinity(0)) < 2:
        parser.error("--split needs cores 0 and 1")
    split = args.split
    cases: dict[str, Callable[[], Sample]] = {
        "raw loop": lambda: raw_loop(args.n, split),
        "soak": lambda: soak_loop(args.n, split),
        "soak, spin=False": lambda: soak_loop(args.n, split, spin=False),
    }
    for tree in (t.resolve() for t in args.baseline):
        cases[f"soak, supervisor of {tree.name}"] = lambda tree=tree: baseline_loop(  # type: ignore[misc]
            args.n, tree, split
        )
    if not args.no_fleet:
        for c in FLEET:
            cases[f"fleet, concurrency {c}"] = lambda c=c: fleet_loop(args.n, c)  # type: ignore[misc]
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores", flush=True)
    print(report(interleaved(cases, args.rounds), args.n, args.rounds, split))


if __name__ == "__main__":
    main()
