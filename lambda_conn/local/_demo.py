"""``lambda-conn demo``: three handlers side by side under the local runtime.

1. a leaky handler, unprotected: fails with EMFILE once the 1,024 descriptors are gone;
2. the same handler with ``@managed_connection``: every request succeeds;
3. a leak the library cannot close, with ``FD_HEALTH_LIMIT`` set (and no minimum
   lifetime): the health guard recycles the container after a response, so no request
   fails.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from typing import IO, Any

from lambda_conn.local._plot import render_svg, rss_mb, stack_svgs
from lambda_conn.local._progress import ProgressBar
from lambda_conn.local._report import format_failures
from lambda_conn.local._soak import SoakReport, soak

CASES: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("1. leaky, unprotected", "lambda_conn.local._demo_handlers.unprotected", {}),
    ("2. leaky, @managed_connection", "lambda_conn.local._demo_handlers.protected", {}),
    # The demo compresses hours into seconds, so the guard's minimum lifetime (60 s by
    # default, against recycling a young container) is switched off; its 90% hard ceiling
    # would otherwise be the only trigger here.
    (
        "3. third-party leak, FD_HEALTH_LIMIT=50%",
        "lambda_conn.local._demo_handlers.third_party_leak",
        {"FD_HEALTH_LIMIT": "50%", "HEALTH_MIN_LIFETIME": "0"},
    ),
)


def run_demo(
    *,
    dsn: str | None = None,
    invocations: int = 1500,
    plot: str | None = None,
    json_path: str | None = None,
    out: IO[str] = sys.stdout,
    quiet: bool = False,
) -> int:
    """Soak the three handlers and print the comparison. Returns the exit status."""
    with contextlib.ExitStack() as stack:
        server: Any = None
        if dsn is not None and not _reachable(dsn, out):
            return 2
        if dsn is None:
            from lambda_conn.local._embedded_mysql import EmbeddedMySQL

            server = stack.enter_context(EmbeddedMySQL())
            dsn = server.dsn
            print(f"Embedded MySQL-protocol server on 127.0.0.1:{server.port}", file=out)
        rows = []
        reports: list[tuple[str, SoakReport]] = []
        started = time.perf_counter()
        for title, handler, extra_env in CASES:
            if not quiet:
                print(f"{title} ({handler})", file=sys.stderr)
            bar = ProgressBar(invocations, quiet=quiet)
            peak_sessions = [0]

            def progress(
                done: int, record: Any, bar: ProgressBar = bar, peak: list[int] = peak_sessions
            ) -> None:
                if server is not None:
                    peak[0] = max(peak[0], server.open_sessions)
                bar(done, record)

            report = soak(
                handler,
                invocations,
                event={"demo": True},
                env={"LAMBDA_CONN_DEMO_DSN": dsn, **extra_env},
                output=subprocess.DEVNULL,
                progress=progress,
            )
            bar.finish()
            reports.append((title, report))
            rows.append(_row(title, report, peak_sessions[0] if server is not None else None))
        elapsed = time.perf_counter() - started
    print(_table(rows), file=out)
    for title, report in reports:
        failures = format_failures(report.summary)
        if failures:
            print(f"\n{title}: {failures}", file=out)
    print(f"\n{3 * invocations} invocations in {elapsed:.1f} s.", file=out)
    if plot:
        write_plot_comparison(reports, plot)
        print(f"Plot of descriptors and memory per invocation: {plot}", file=out)
    if json_path:
        import json

        with open(json_path, "w", encoding="utf-8") as fh:
            json.dump({title: rep.to_dict() for title, rep in reports}, fh, indent=1)
    broken = [title for title, report in reports[1:] if report.failed]
    if broken:
        print(f"\nFAILED: {', '.join(broken)} should never fail a request.", file=out)
        return 1
    return 0


def _reachable(dsn: str, out: IO[str]) -> bool:
    """A real server given with --dsn answers SELECT 1 before 4,500 invocations try it."""
    from lambda_conn._redact import redact
    from lambda_conn.local._demo_handlers import connect_dsn

    try:
        conn = connect_dsn(dsn)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
        finally:
            conn.close()
    except Exception as exc:
        print(f"--dsn {redact(dsn)}: cannot run SELECT 1 there: {redact(str(exc))}", file=out)
        return False
    return True


def _row(title: str, report: SoakReport, peak_sessions: int | None) -> list[str]:
    summary = report.summary
    first_failure = next((r for r in report.records if not r.ok), None)
    failures = ", ".join(f"{n} {kind}" for kind, n in sorted(summary.failures_by_type.items()))
    return [
        title,
        str(summary.invocations),
        str(summary.succeeded),
        failures or "0",
        str(first_failure.index + 1) if first_failure is not None else "-",
        str(summary.recycles),
        str(summary.peak_fds) if summary.peak_fds is not None else "?",
        str(peak_sessions) if peak_sessions is not None else "n/a",
    ]


def _table(rows: list[list[str]]) -> str:
    header = [
        "handler",
        "invocations",
        "succeeded",
        "failed (by error type)",
        "first failure at",
        "recycles",
        "peak fds",
        "peak server sessions",
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(header, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def write_plot_comparison(reports: list[tuple[str, SoakReport]], path: str) -> None:
    """The soak plot of each case, stacked in one SVG file."""
    if not path.lower().endswith(".svg"):
        raise ValueError(f"--plot {path!r}: the demo writes SVG; use a name ending in .svg")
    # One scale for all: a flat line at 6 descriptors must not fill its panel as 1,024 do.
    records = [r for _, report in reports for r in report.records]
    fds = max((r.fd_count for r in records if r.fd_count is not None), default=None)
    rss = max((v for r in records if (v := rss_mb(r)) is not None), default=None)
    svgs = [
        render_svg(report.records, title=title, memory_mb=report.memory_mb, y_max=(fds, rss))
        for title, report in reports
    ]
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(stack_svgs(svgs))
