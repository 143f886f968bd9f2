"""The rows a fleet soak adds to the table (``fleet_rows``): what they say when the soak
did not go as asked (a freeze cut short, a server counting the clients it refuses)."""

from __future__ import annotations

from typing import Any

import pytest

from lambda_conn.local._fleet_report import FleetSummary, fleet_rows


def _summary(**changes: Any) -> FleetSummary:
    values: dict[str, Any] = {
        "concurrency": 8,
        "ramp_s": None,
        "idle_s": None,
        "environments_created": 8,
        "environments_replaced": 0,
        "peak_environments": 8,
        "too_many_connections": 0,
        "rds_retries": 0,
        "rds_retries_by_code": {},
        "idle_after": None,
        "supervisor_rss_start_bytes": None,
        "supervisor_rss_end_bytes": None,
        **changes,
    }
    return FleetSummary(**values)


@pytest.mark.parametrize(
    ("frozen", "shown"),
    [
        (30.01, "30 s after invocation 200"),
        (2.96, "3.0 s of 30 s (stopped) after invocation 200"),
    ],
)
def test_the_idle_row_says_how_long_the_freeze_lasted(frozen: float, shown: str) -> None:
    rows = dict(fleet_rows(_summary(idle_s=30.0, idle_after=200, idle_frozen_s=frozen)))
    assert rows["all frozen (--idle)"] == shown


def test_the_idle_row_says_when_the_freeze_never_came() -> None:
    # stopped (Ctrl-C, Init failures) before half the invocations were handed out
    rows = dict(fleet_rows(_summary(idle_s=30.0, idle_after=None, idle_frozen_s=None)))
    assert rows["all frozen (--idle)"] == "30 s asked, not reached"


@pytest.mark.parametrize(
    ("peak", "shown"),
    [
        (9, "9 / 10 max_connections"),
        (10, "10 / 10 max_connections"),
        (11, "11 / 10 max_connections (with clients being refused)"),
    ],
)
def test_a_peak_above_the_maximum_says_why(peak: int, shown: str) -> None:
    rows = dict(fleet_rows(_summary(peak_server_connections=peak, server_max_connections=10)))
    assert rows["peak server connections"] == shown
