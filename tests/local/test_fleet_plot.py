"""The fleet plot: server connections against max_connections, environments busy against
the concurrency, failures per time slice ("too many connections" apart)."""

from __future__ import annotations

import importlib.util
import xml.etree.ElementTree as ET
from array import array
from pathlib import Path
from typing import Any

import pytest

from lambda_conn.local._plot import fleet_timeline, render_fleet_svg, write_fleet_plot
from lambda_conn.local._records import InvocationRecord
from lambda_conn.local._server_sampler import ServerSeries

SVG = "{http://www.w3.org/2000/svg}"


def record(
    i: int, duration_ms: float, *, error: str | None = None, init_ms: float | None = None
) -> InvocationRecord:
    return InvocationRecord(
        index=i,
        request_id=f"r{i}",
        outcome="ok" if error is None else "function_error",
        error_type=None if error is None else "OperationalError",
        error_message=error,
        stack_trace=None,
        response=None,
        duration_ms=duration_ms,
        response_ms=duration_ms,
        cold_start=init_ms is not None,
        init_duration_ms=init_ms,
        fd_count=None,
        rss_bytes=None,
        exited_after_response=False,
        reset_reason=None,
        exit_status=None,
        sigterm_sent=None,
        environment=0,
    )


def too_many(r: InvocationRecord) -> bool:
    return "1040" in (r.error_message or "")


def series(started_at: float, counts: list[int], max_connections: int = 10) -> ServerSeries:
    return ServerSeries(
        flavour="mysql",
        server="mysql://***@127.0.0.1:3306/demo",
        max_connections=max_connections,
        started_at=started_at,
        interval_s=0.1,
        times=array("d", [0.1 * k for k in range(len(counts))]),
        counts=array("i", counts),
        failed_samples=0,
    )


def test_the_timeline_counts_overlap_failures_and_moves_the_sampler_onto_the_soak_clock() -> None:
    # GIVEN three invocations of 1 s: two overlapping from t=0, one alone from t=2;
    # the second refused with 1040, the third failed otherwise
    records = [
        record(0, 1000),
        record(1, 1000, error="(1040, 'Too many connections')"),
        record(2, 1000, error="boom"),
    ]
    started = [0.0, 0.5, 2.0]
    # AND a sampler started 0.3 s before the soak (monotonic 99.7 against 100.0)
    line = fleet_timeline(
        records,
        started,
        series=series(99.7, [0, 2, 1]),
        started_at=100.0,
        too_many=too_many,
        bins=6,
    )
    assert max(v for _, v in line.busy) == 2
    assert line.busy[-1] == (3.0, 0.0)  # all done at 3 s
    assert [round(t, 3) for t, _ in line.connections] == [-0.3, -0.2, -0.1]
    assert (round(line.begin_s, 3), line.end_s) == (-0.3, 3.0)
    assert sum(line.too_many) == 1 and sum(line.failures) == 1
    assert line.too_many.index(1) < line.failures.index(1)  # the 1040 came first


def test_the_svg_has_three_panels_with_their_limits() -> None:
    records = [
        record(i, 5.0, error=None if i % 3 else "(1040, 'Too many connections')")
        for i in range(300)
    ]
    started = [i * 0.01 for i in range(300)]
    svg = render_fleet_svg(
        records,
        started,
        series=series(0.0, [k % 12 for k in range(40)]),
        started_at=0.0,
        concurrency=4,
        too_many=too_many,
        title="fan <out> & more",
    )
    root = ET.fromstring(svg)  # well-formed, the title escaped
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    assert "max_connections 10" in texts and "concurrency 4" in texts
    assert any("100 too many connections" in t for t in texts)
    assert len(root.findall(f".//{SVG}polyline")) == 2  # connections, busy
    assert len(root.findall(f".//{SVG}rect[@class='refused']")) > 0


def test_without_a_sampler_the_first_panel_says_how_to_get_one_and_long_soaks_are_decimated() -> (
    None
):
    n = 20_000
    records = [record(i, 3.0) for i in range(n)]
    svg = render_fleet_svg(records, [i * 0.001 for i in range(n)], concurrency=8)
    root = ET.fromstring(svg)
    assert any("give --dsn" in (t.text or "") for t in root.iter(f"{SVG}text"))
    (busy,) = root.findall(f".//{SVG}polyline")
    assert len(busy.get("points", "").split()) <= 1500


def test_a_cold_start_is_busy_through_its_init() -> None:
    # GIVEN a cold start (Init 500 ms, then 100 ms) and a warm invocation sent at 0.4 s
    line = fleet_timeline([record(0, 100, init_ms=500), record(1, 100)], [0.0, 0.4])
    # THEN both are in flight at once, and the fleet is idle from 0.6 s
    assert max(v for _, v in line.busy) == 2
    assert line.busy[-1] == (0.6, 0.0)


def test_a_failure_counts_when_it_happened_after_its_init() -> None:
    # GIVEN a cold start sent at 0 s that failed after a 900 ms Init and 100 ms
    line = fleet_timeline([record(0, 100, error="boom", init_ms=900)], [0.0], bins=10)
    # THEN it is in the last time slice (1 s), not the first
    assert line.failures == [0] * 9 + [1]


def test_records_and_start_times_must_pair_up() -> None:
    with pytest.raises(ValueError, match="started_s has 1 times for 2 records"):
        fleet_timeline([record(0, 1), record(1, 1)], [0.0])


def test_svg_or_png_by_suffix(tmp_path: Path) -> None:
    records: list[Any] = [record(0, 1.0)]
    path = write_fleet_plot(records, [0.0], tmp_path / "f.svg", concurrency=1)
    assert Path(path).read_text().startswith("<svg")
    with pytest.raises(ValueError, match=r"must end in \.svg or \.png"):
        write_fleet_plot(records, [0.0], tmp_path / "f.gif")
    if importlib.util.find_spec("matplotlib") is None:  # as with the test extra
        with pytest.raises(ValueError, match="PNG needs matplotlib"):
            write_fleet_plot(records, [0.0], tmp_path / "f.png")
    else:
        write_fleet_plot(records, [0.0], tmp_path / "f.png", series=series(0.0, [1, 2]))
        assert (tmp_path / "f.png").read_bytes().startswith(b"\x89PNG")


def test_soak_plot_of_a_fleet_run_draws_the_server_against_its_maximum(tmp_path: Path) -> None:
    import subprocess
    import sys

    from lambda_conn.local._embedded_mysql import EmbeddedMySQL

    # GIVEN a fleet soak of the demo's leaky handler against a server allowing 6 sessions
    (tmp_path / "app.py").write_text(
        "from lambda_conn.local._demo_handlers import unprotected as handler\n"
    )
    with EmbeddedMySQL(max_connections=6) as server:
        out = subprocess.run(
            [sys.executable, "-m", "lambda_conn.cli", "soak",
             "app.handler", "-n", "30", "--concurrency", "4",
             "--dsn", server.dsn, "--env", f"LAMBDA_CONN_DEMO_DSN={server.dsn}",
             "--plot", "fleet.svg", "--quiet"],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )  # fmt: skip
    # THEN the fleet plot, not the single-environment one: the server's limit, the
    # concurrency, and the refused sessions in red
    assert out.returncode == 1, out.stderr[-3000:]  # the leak failed requests
    root = ET.fromstring((tmp_path / "fleet.svg").read_text())
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    assert "max_connections 6" in texts and "concurrency 4" in texts
    assert any("too many connections)" in t for t in texts)
    assert len(root.findall(f".//{SVG}rect[@class='refused']")) > 0
    assert "open file descriptors" not in texts
