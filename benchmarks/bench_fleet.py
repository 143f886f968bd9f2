"""Fleet soak throughput at concurrency 1, 2, 4, 8, and the supervisor's memory, in one run.

Run: python benchmarks/bench_fleet.py [--n 2000] [--rounds 3] [--memory-n 10000 --memory-c 50]
                                      [--waiting]

Each round soaks the trivial handler (``_soak_trivial.handler``) with ``fleet_soak`` at
each concurrency in turn (1 2 4 8, then 8 4 2 1, ...), so every concurrency shares the
machine's load; the table gives the median rate (invocations per second of wall time,
cold starts included: one per environment) and the supervisor's CPU time per invocation
(user + sys of this process and of the shards it forked, as they report it; their
runtimes' not included), with each median's ratio to concurrency 1. On a machine with
C cores the rate can grow with concurrency until the runtimes and the supervisor fill
them. Then one soak of ``--memory-n`` invocations at ``--memory-c`` reports the
supervisor's resident memory before and after and its peak (``ru_maxrss``), the largest
peak of its shards, the same for a tenth of the invocations (what grows with them), and a
second one what its report keeps (tracemalloc). ``--waiting`` adds the throughput rows of a
handler that waits 2 ms (``_soak_waiting.handler``), as one on a database round trip.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _common import cpu_s  # noqa: E402

from lambda_conn.local import FleetReport, fleet_soak  # noqa: E402

HANDLER = "_soak_trivial.handler"
WAITING = "_soak_waiting.handler"
CONCURRENCIES = (1, 2, 4, 8)


def warm_rate(report: FleetReport) -> float:
    """Invocations/s once every environment is warm: those sent after the last cold
    start's invocation ended, over the time from then to the last one's end. Cold starts
    are excluded: each environment's Init is tens of milliseconds of CPU, as much as
    thousands of warm invocations."""
    pairs = list(zip(report.records, report.started_s, strict=True))
    warm_from = max(
        t + ((r.init_duration_ms or 0) + r.duration_ms) / 1000 for r, t in pairs if r.cold_start
    )
    warm = [t + r.duration_ms / 1000 for r, t in pairs if t >= warm_from]
    return len(warm) / (max(warm) - warm_from) if len(warm) > 1 else float("nan")


def one(
    concurrency: int, n: int, handler: str = HANDLER, shards: int | None = None
) -> tuple[float, float, float]:
    """(invocations/s, warm invocations/s, the supervisor's CPU us per invocation: this
    process's and its shards') of one fleet soak."""
    cpu = cpu_s()
    start = time.perf_counter()
    report = fleet_soak(
        handler,
        n,
        concurrency=concurrency,
        handler_dir=HERE,
        output=subprocess.DEVNULL,
        shards=shards,
    )
    wall = time.perf_counter() - start
    assert report.summary.failed == 0, report.summary.failures_by_type
    cpu = cpu_s() - cpu + (report.fleet.shard_cpu_s or 0.0)
    return n / wall, warm_rate(report), cpu / n * 1e6


ONE = "one process"
MODES = {"one process per core": None, ONE: 1}


def throughput(n: int, rounds: int, handler: str = HANDLER) -> str:
    # At concurrency 1 both modes are one process: run once, the base of both ratios.
    cases = [(c, mode) for c in CONCURRENCIES for mode in MODES if c > 1 or mode == ONE]
    rates: dict[tuple[int, str], list[float]] = {case: [] for case in cases}
    warms: dict[tuple[int, str], list[float]] = {case: [] for case in cases}
    cpus: dict[tuple[int, str], list[float]] = {case: [] for case in cases}
    for r in range(rounds):
        for c, mode in cases if r % 2 == 0 else reversed(cases):
            rate, warm, cpu = one(c, n, handler, MODES[mode])
            rates[c, mode].append(rate)
            warms[c, mode].append(warm)
            cpus[c, mode].append(cpu)
            print(
                f"  round {r + 1}/{rounds} concurrency {c} ({mode}): {rate:,.0f}/s, "
                f"warm {warm:,.0f}/s",
                flush=True,
            )
    lines = [
        f"### Fleet soak throughput, `{handler}` ({n} invocations per soak, {rounds} "
        f"rounds, {os.cpu_count()} cores)",
        "",
        "| concurrency | supervisor | median invocations/s | ratio | once warm, "
        "invocations/s | ratio | supervisor CPU us/inv (shards included) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c, mode in cases:
        base = statistics.median(rates[1, ONE])
        warm_base = statistics.median(warms[1, ONE])
        median = statistics.median(rates[c, mode])
        warm = statistics.median(warms[c, mode])
        lines.append(
            f"| {c} | {mode} | {median:,.0f} | {median / base:.2f}x | {warm:,.0f} | "
            f"{warm / warm_base:.2f}x | {statistics.median(cpus[c, mode]):,.0f} |"
        )
    return "\n".join(lines) + "\n"


def _shard_peak(n: int, concurrency: int) -> int:
    report = fleet_soak(
        HANDLER, n, concurrency=concurrency, handler_dir=HERE, output=subprocess.DEVNULL
    )
    return report.fleet.shard_peak_rss_bytes or 0


def memory(n: int, concurrency: int) -> str:
    small = _shard_peak(max(concurrency, n // 10), concurrency)
    report = fleet_soak(
        HANDLER, n, concurrency=concurrency, handler_dir=HERE, output=subprocess.DEVNULL
    )
    fleet = report.fleet
    start, end = fleet.supervisor_rss_start_bytes or 0, fleet.supervisor_rss_end_bytes or 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # What the report itself keeps, measured by Python's allocator (RSS also moves with
    # the malloc arenas of the caller threads, so it varies from run to run).
    del report
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept_report = fleet_soak(
            HANDLER, n, concurrency=concurrency, handler_dir=HERE, output=subprocess.DEVNULL
        )
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(kept_report.records) == n
    return (
        f"### Supervisor memory, {n} invocations x {concurrency} environments\n\n"
        f"RSS {start / 2**20:.1f} MB before, {end / 2**20:.1f} MB after "
        f"({(end - start) / 2**20:+.1f} MB); peak {peak / 2**20:.1f} MB; "
        f"{fleet.environments_created} environments. Its {fleet.shards} shards' largest "
        f"peak RSS: {(fleet.shard_peak_rss_bytes or 0) / 2**20:.1f} MB "
        f"({small / 2**20:.1f} MB for {max(concurrency, n // 10)} invocations). "
        f"Kept by the report (tracemalloc, a "
        f"second soak): {kept / 2**20:.1f} MB, {kept / n:,.0f} B per invocation.\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-n", type=int, default=10_000)
    parser.add_argument("--memory-c", type=int, default=50)
    parser.add_argument(
        "--waiting", action="store_true", help="also a handler that waits 2 ms per invocation"
    )
    args = parser.parse_args(argv)
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores", flush=True)
    print(throughput(args.n, args.rounds))
    if args.waiting:
        print(throughput(args.n, args.rounds, WAITING))
    print(memory(args.memory_n, args.memory_c))


if __name__ == "__main__":
    main()
