"""Shared helpers for the benchmark scripts: timing, medians, markdown tables.

Benchmarks report medians and ratios from one run; the machines are noisy, so nothing
here is ever asserted in tests.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def cpu_s() -> float:
    """This process's CPU time so far (user + system), in seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def per_call_us(fn: Callable[[], object], *, number: int, repeat: int) -> list[float]:
    """Microseconds per call, one sample per repeat of ``number`` calls."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number * 1e6)
    return samples


def each_call_us(fn: Callable[[], object], *, repeat: int) -> list[float]:
    """Microseconds of each single call (for slow operations such as connects)."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e6)
    return samples


def p99(samples: Sequence[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def table(title: str, rows: list[tuple[str, list[float]]], unit: str = "us") -> str:
    """Markdown: median, p99 and the ratio of each median to the fastest."""
    medians = {name: statistics.median(samples) for name, samples in rows}
    fastest = min(medians.values()) or 1e-9
    lines = [
        f"### {title}",
        "",
        f"| case | median ({unit}) | p99 ({unit}) | ratio to fastest |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, samples in rows:
        median = medians[name]
        lines.append(f"| {name} | {median:.2f} | {p99(samples):.2f} | {median / fastest:.2f}x |")
    return "\n".join(lines) + "\n"
