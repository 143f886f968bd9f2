"""Summary, table and SVG from records alone (no process involved)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from lambda_conn.local import InvocationRecord, format_table, render_svg, summarize
from lambda_conn.local._report import percentile


def record(index: int, **changes: object) -> InvocationRecord:
    fields: dict[str, object] = {
        "index": index,
        "request_id": f"r{index}",
        "outcome": "ok",
        "error_type": None,
        "error_message": None,
        "stack_trace": None,
        "response": None,
        "duration_ms": float(index + 1),
        "response_ms": 0.5,
        "cold_start": index == 0,
        "init_duration_ms": None,
        "fd_count": 5 + index,
        "rss_bytes": (20 + index) * 2**20,
        "exited_after_response": False,
        "reset_reason": None,
        "exit_status": None,
        "sigterm_sent": None,
        "environment": 1,
    }
    fields.update(changes)
    return InvocationRecord(**fields)  # type: ignore[arg-type]


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([], 50) is None


def test_summary_counts_failures_by_type_and_recycles():
    records = [
        record(0),
        record(1, outcome="function_error", error_type="ValueError"),
        record(2, outcome="timeout", error_type="Sandbox.Timedout", reset_reason="timeout"),
        record(3, exited_after_response=True, reset_reason="exited_after_response"),
        record(4, cold_start=True, fd_count=None, rss_bytes=None),
    ]
    summary = summarize(records)
    assert (summary.invocations, summary.succeeded, summary.failed) == (5, 3, 2)
    assert summary.failures_by_type == {"ValueError": 1, "Sandbox.Timedout": 1}
    assert (summary.cold_starts, summary.recycles, summary.resets) == (2, 1, 2)
    assert summary.peak_fds == 8 and summary.peak_rss_bytes == 23 * 2**20
    # durations run 1..5 ms; the caller had each answer after 0.5 ms
    assert (summary.p50_ms, summary.response_p50_ms, summary.response_p99_ms) == (3.0, 0.5, 0.5)
    table = format_table(summary, rate=123.4, memory_mb=128)
    assert "ValueError" in table and "123 invocations/s" in table and "/ 128 MB" in table
    assert "response p50 (caller)" in table and "0.50 ms" in table


def test_svg_is_well_formed_and_decimates_long_soaks():
    records = [record(i, cold_start=False) for i in range(10_000)]
    svg = render_svg(records, title="a <title> & more")
    root = ET.fromstring(svg)
    lines = root.findall(".//{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 2
    assert len(lines[0].get("points", "").split()) <= 1500
