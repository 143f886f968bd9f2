"""Turn invocation records into the numbers a soak is judged by, and a plain-text table."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lambda_conn.local._constants import FD_LIMIT
from lambda_conn.local._records import InvocationRecord

__all__ = [
    "SoakSummary",
    "failure_type",
    "format_failures",
    "format_table",
    "percentile",
    "summarize",
]

_MESSAGE_CHARS = 300  # of a failure message under the table (all of it is in --json)


@dataclass(frozen=True)
class SoakSummary:
    """Counts as the caller saw them, plus the sandbox's peaks.

    ``recycles`` counts runtimes that exited after answering (what lambda_conn's recycler
    does); ``resets`` counts every environment thrown away, whatever the reason.
    """

    invocations: int
    succeeded: int
    failed: int
    failures_by_type: dict[str, int]
    cold_starts: int
    recycles: int
    resets: int
    p50_ms: float | None
    p99_ms: float | None
    #: When the caller had its answer: work after the response (an extension's, say)
    #: counts in the duration, not here.
    response_p50_ms: float | None
    response_p99_ms: float | None
    peak_fds: int | None
    peak_rss_bytes: int | None
    #: For each failure type, its first occurrence: ``{"invocation": n, "message": ...}``
    #: (``n`` counts from 1), so the useful message is never only in the JSON.
    first_failures: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    #: ``rds_proxy_pinning`` lines in the function's output (LAMBDA_CONN_PINNING_CHECK=1),
    #: in all and per statement class.
    pinning: int = 0
    pinning_classes: dict[str, int] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile (no interpolation: every reported value really happened)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def failure_type(record: InvocationRecord) -> str:
    """The key a failure is counted under: its error type, or its outcome without one."""
    return record.error_type or record.outcome


def summarize(
    records: Sequence[InvocationRecord],
    pinning: dict[str, int] | None = None,
    *,
    kind_of: Callable[[InvocationRecord], str] = failure_type,
) -> SoakSummary:
    """``kind_of`` names each failure's row (a fleet separates "too many connections").

    One pass over ``records``: a fleet's are rebuilt from columns as they are read."""
    failures: Counter[str] = Counter()
    first_failures: dict[str, dict[str, Any]] = {}
    durations: list[float] = []
    responses: list[float] = []
    peak_fds: int | None = None
    peak_rss: int | None = None
    succeeded = cold_starts = recycles = resets = 0
    for r in records:
        durations.append(r.duration_ms)
        if r.response_ms is not None:
            responses.append(r.response_ms)
        if r.fd_count is not None and (peak_fds is None or r.fd_count > peak_fds):
            peak_fds = r.fd_count
        if r.rss_bytes is not None and (peak_rss is None or r.rss_bytes > peak_rss):
            peak_rss = r.rss_bytes
        cold_starts += r.cold_start
        recycles += r.exited_after_response
        resets += r.recycled
        if r.ok:
            succeeded += 1
            continue
        kind = kind_of(r)
        failures[kind] += 1
        if kind not in first_failures:
            first_failures[kind] = {"invocation": r.index + 1, "message": r.error_message}
    return SoakSummary(
        invocations=len(durations),
        succeeded=succeeded,
        failed=len(durations) - succeeded,
        failures_by_type=dict(failures.most_common()),
        cold_starts=cold_starts,
        recycles=recycles,
        resets=resets,
        p50_ms=percentile(durations, 50),
        p99_ms=percentile(durations, 99),
        response_p50_ms=percentile(responses, 50),
        response_p99_ms=percentile(responses, 99),
        peak_fds=peak_fds,
        peak_rss_bytes=peak_rss,
        first_failures=first_failures,
        pinning=sum((pinning or {}).values()),
        pinning_classes=dict(pinning or {}),
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def format_table(
    summary: SoakSummary,
    *,
    rate: float | None = None,
    memory_mb: int | None = None,
    heading: Sequence[str] = (),
    extra: Sequence[tuple[str, str]] = (),
) -> str:
    """A two-column table for a terminal, under ``heading`` (what was soaked, and how);
    failures are broken down by error type, and the first message of each type follows.
    ``extra`` rows (a fleet's) go before the throughput."""
    rows: list[tuple[str, str]] = [
        ("invocations", str(summary.invocations)),
        ("succeeded", str(summary.succeeded)),
        ("failed", str(summary.failed)),
    ]
    rows += [(f"  {kind}", str(count)) for kind, count in summary.failures_by_type.items()]
    peak_mb = None if summary.peak_rss_bytes is None else summary.peak_rss_bytes / 2**20
    rows += [
        ("cold starts", str(summary.cold_starts)),
        ("recycles (exit after response)", str(summary.recycles)),
        ("environment resets", str(summary.resets)),
        ("duration p50", _ms(summary.p50_ms)),
        ("duration p99", _ms(summary.p99_ms)),
        ("response p50 (caller)", _ms(summary.response_p50_ms)),
        ("response p99 (caller)", _ms(summary.response_p99_ms)),
        (
            "peak descriptors",
            "-" if summary.peak_fds is None else f"{summary.peak_fds} / {FD_LIMIT}",
        ),
        (
            "peak memory (RSS)",
            "-"
            if peak_mb is None
            else f"{peak_mb:.1f} MB" + (f" / {memory_mb} MB" if memory_mb else ""),
        ),
        ("RDS Proxy pinning (logged)", str(summary.pinning)),
    ]
    rows += [(f"  {kind}", str(count)) for kind, count in summary.pinning_classes.items()]
    rows += extra
    if rate is not None:
        rows.append(("throughput", f"{rate:.0f} invocations/s"))
    width = max(len(name) for name, _ in rows)
    value_width = max(len(value) for _, value in rows)
    line = "-" * (width + value_width + 3)
    body = [f"{name:<{width}}   {value:>{value_width}}" for name, value in rows]
    failures = format_failures(summary)
    return "\n".join([*heading, line, *body, line, *([failures] if failures else [])])


def format_failures(summary: SoakSummary) -> str:
    """The first message of each failure type, one line each (empty when none failed)."""
    lines = []
    for kind, first in summary.first_failures.items():
        message = " ".join(str(first["message"] or "(no message)").split())
        if len(message) > _MESSAGE_CHARS:
            message = message[: _MESSAGE_CHARS - 3] + "..."
        lines.append(f"  {kind} (first at invocation {first['invocation']}): {message}")
    return "\n".join(["first failure of each type:", *lines]) if lines else ""
