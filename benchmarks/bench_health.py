"""Health guard costs: the per-invocation check with 100 open descriptors (target <= 50 us).

Run: python benchmarks/bench_health.py
Prints markdown tables of medians, p99 and ratios from one run. The check is what every
guarded invocation pays before its response is posted: count descriptors (listdir of
/proc/self/fd), read RSS (pread of a kept-open /proc/self/statm), compare, and record the
growth per invocation the projection needs. The last table times the check with and
without that growth tracking, interleaved sample by sample, so the ratio is one run's.
"""

from __future__ import annotations

import os
import statistics

from _common import per_call_us, table

OPEN_FDS = 100


def hold_descriptors(total: int) -> list[int]:
    """Open /dev/null until the process holds ``total`` descriptors."""
    from lambda_conn._guard.probes import count_fds

    held = []
    while count_fds() < total:
        held.append(os.open(os.devnull, os.O_RDONLY))
    return held


def bench_probes() -> str:
    from lambda_conn._guard.probes import FdCounter, RssReader

    counter = FdCounter()
    counter()  # decides: st_size (Linux >= 6.2) or listing
    old_kernel = FdCounter()
    old_kernel._use_stat = False  # what a kernel before 6.2 (st_size 0) leaves us
    reader = RssReader()
    page = os.sysconf("SC_PAGE_SIZE")

    def rss_open_read() -> int:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * page

    mode = "stat st_size" if counter._use_stat else "listdir (kernel < 6.2)"
    rows = [
        (f"fd count, this kernel: {mode}", per_call_us(counter, number=2000, repeat=25)),
        (
            "fd count: len(os.listdir('/proc/self/fd'))",
            per_call_us(old_kernel, number=2000, repeat=25),
        ),
        (
            "fd bound: FDSize from a kept-open /proc/self/status",
            per_call_us(old_kernel.upper_bound, number=5000, repeat=25),
        ),
        ("RSS: pread of a kept-open statm fd", per_call_us(reader, number=20000, repeat=25)),
        (
            "RSS: open + read + close (alternative)",
            per_call_us(rss_open_read, number=5000, repeat=25),
        ),
    ]
    return table(f"Probes, {OPEN_FDS} open descriptors", rows)


class NeverRecycler:
    """A recycler that is never reached: the benchmark stays under every limit."""

    def available(self) -> bool:
        return True

    def arm(self) -> bool:
        raise AssertionError("over a limit during the benchmark")

    def is_armed(self) -> bool:
        return False


def bench_check() -> str:
    from lambda_conn._guard.config import Platform, load_config
    from lambda_conn._guard.guard import HealthGuard
    from lambda_conn._guard.probes import FdCounter

    where = Platform(fd_rlimit=1024, runtime_api="127.0.0.1:9001", memory_mb=1024)
    args = ({"path": "/"}, None)
    old_kernel = FdCounter()
    old_kernel._use_stat = False

    def guard(counter: FdCounter | None, limits: dict[str, str]) -> HealthGuard:
        config = load_config({}, limits, where)
        if counter is None:
            made = HealthGuard(config, where, recycler=NeverRecycler())
        else:
            made = HealthGuard(
                config,
                where,
                recycler=NeverRecycler(),
                count_fds=counter,
                fd_upper_bound=counter.upper_bound,
            )
        made.check(args)  # the first invocation takes the baseline
        return made

    both = {"fd_limit": "90%", "memory_limit": "90%"}
    this_kernel = guard(None, both)
    far_under = guard(old_kernel, both)  # FDSize 128 <= 921: no listing
    near = guard(old_kernel, {"fd_limit": "120", "memory_limit": "90%"})  # 128 > 120: listing
    rows = [
        (
            "fd + RSS + compare, this kernel",
            per_call_us(lambda: this_kernel.check(args), number=5000, repeat=25),
        ),
        (
            "fd + RSS + compare, kernel < 6.2, FDSize under the limit",
            per_call_us(lambda: far_under.check(args), number=5000, repeat=25),
        ),
        (
            "fd + RSS + compare, kernel < 6.2, FDSize over the limit (listing)",
            per_call_us(lambda: near.check(args), number=2000, repeat=25),
        ),
    ]
    return table(f"Guard check per invocation, under the limits, {OPEN_FDS} open descriptors", rows)


def bench_growth() -> str:
    """The check with growth tracking (the projection) against the same check without it,
    interleaved: what the projection adds per invocation."""
    from lambda_conn._guard.config import Platform, load_config
    from lambda_conn._guard.growth import Growth
    from lambda_conn._guard.guard import HealthGuard

    where = Platform(fd_rlimit=1024, runtime_api="127.0.0.1:9001", memory_mb=1024)
    args = ({"path": "/"}, None)
    config = load_config({}, {"fd_limit": "90%", "memory_limit": "90%"}, where)
    with_growth = HealthGuard(config, where, recycler=NeverRecycler())
    without = HealthGuard(config, where, recycler=NeverRecycler())
    for made in (with_growth, without):
        made.check(args)
    without.growth = {}  # nothing recorded, nothing projected: the check before issue 10
    growth = Growth(100, 1024)
    samples: dict[str, list[float]] = {"with": [], "without": [], "record": []}
    for _ in range(40):  # interleaved, so a noisy moment hits both sides
        samples["with"] += per_call_us(lambda: with_growth.check(args), number=1000, repeat=1)
        samples["without"] += per_call_us(lambda: without.check(args), number=1000, repeat=1)
        samples["record"] += per_call_us(
            lambda: growth.near(100) or growth.record(100), number=5000, repeat=1
        )
    ratios = [a / b for a, b in zip(samples["with"], samples["without"], strict=True)]
    rows = [
        ("fd + RSS + compare, no growth tracking (before issue 10)", samples["without"]),
        ("fd + RSS + compare + growth tracking and projection bound", samples["with"]),
        ("growth tracking alone, one resource (near + record)", samples["record"]),
    ]
    return table("Growth tracking per invocation, this kernel", rows) + (
        f"\nmedian of paired ratios (with / without): {statistics.median(ratios):.2f}x\n"
    )


def bench_decorated() -> str:
    """What a handler pays per call, guard off (nothing) and on."""
    from lambda_conn._guard import factory
    from lambda_conn._guard.decorator import health_guard

    def bare(event: object, context: object) -> int:
        return 1

    os.environ.pop("AWS_LAMBDA_RUNTIME_API", None)  # report-only; nothing is installed
    factory._reset_for_tests()
    off = health_guard(bare)  # no variable set: the handler itself
    on = health_guard(fd_limit="90%", memory_limit="1GB", min_lifetime=0)(bare)
    event: dict[str, int] = {}
    rows = [
        ("bare call", per_call_us(lambda: bare(event, None), number=20000, repeat=25)),
        (
            "@health_guard, no variable set",
            per_call_us(lambda: off(event, None), number=20000, repeat=25),
        ),
        (
            "@health_guard, both limits",
            per_call_us(lambda: on(event, None), number=2000, repeat=25),
        ),
    ]
    return table(f"Decorated handler, {OPEN_FDS} open descriptors", rows)


def main() -> None:
    held = hold_descriptors(OPEN_FDS)
    try:
        print(bench_probes())
        print(bench_check())
        print(bench_decorated())
        print(bench_growth())
    finally:
        for fd in held:
            os.close(fd)


if __name__ == "__main__":
    main()
