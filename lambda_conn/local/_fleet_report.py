"""What a fleet soak adds to a soak's summary: environments, the database's limit, retries.

The fan-out outage has one signature: "too many connections" (MySQL/MariaDB error 1040,
PostgreSQL SQLSTATE 53300), whatever the client's exception type. Those failures get a row
of their own, beside the exception type they were raised as, so a table shows at a glance
whether the database ran out or the function failed for another reason.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from lambda_conn.local._records import InvocationRecord
from lambda_conn.local._report import failure_type

__all__ = ["FleetSummary", "fleet_failure_kind", "fleet_rows", "too_many_connections"]

#: Lower-case fragments that mean the server refused a connection for lack of slots:
#: MySQL/MariaDB ER_CON_COUNT_ERROR (1040) and PostgreSQL's 53300 messages (also the
#: reserved-slots wording), psycopg's and asyncpg's exception names (TooManyConnections,
#: TooManyConnectionsError), RDSConnector's give-up text (it quotes the last error).
_TOO_MANY = (
    "too many connections",
    "too many clients",
    "remaining connection slots are reserved",
    "toomanyconnections",
)
#: The SQLSTATE itself only where it is labelled as one ("SQLSTATE 53300", "pgcode:
#: 53300", "[53300]"): bare, the digits are as likely a port or a count.
_SQLSTATE_53300 = re.compile(r"(?:sqlstate|pgcode)\W{0,3}53300\b|\[53300\]")
TOO_MANY_LABEL = "too many connections"


def too_many_connections(record: InvocationRecord) -> bool:
    """True when the invocation failed because the database had no connection left."""
    if record.ok:
        return False
    text = f"{record.error_type or ''} {record.error_message or ''}".lower()
    return any(fragment in text for fragment in _TOO_MANY) or bool(_SQLSTATE_53300.search(text))


def fleet_failure_kind(record: InvocationRecord) -> str:
    """``OperationalError (too many connections)`` for those, the error type otherwise."""
    kind = failure_type(record)
    return f"{kind} ({TOO_MANY_LABEL})" if too_many_connections(record) else kind


@dataclass(frozen=True)
class FleetSummary:
    """The fleet's own numbers; the per-invocation ones are in the soak's summary."""

    concurrency: int
    ramp_s: float | None
    idle_s: float | None
    #: Every environment started (each a cold start), and those of them that replaced
    #: an environment reset or recycled before.
    environments_created: int
    environments_replaced: int
    #: The most environments alive at once (warm or busy), at most ``concurrency``.
    peak_environments: int
    too_many_connections: int
    #: ``rds_connect_retry`` lines the function logged, in all and per error code.
    rds_retries: int
    rds_retries_by_code: dict[str, int]
    #: When --idle froze every environment: the invocation after which it did (from 1).
    idle_after: int | None
    #: The supervisor's own resident memory at the start and at the end of the soak.
    supervisor_rss_start_bytes: int | None
    supervisor_rss_end_bytes: int | None
    #: With a DSN: the most client connections the server had at once, and its maximum.
    peak_server_connections: int | None = None
    server_max_connections: int | None = None
    #: How long every environment stayed frozen for --idle (shorter than ``idle_s`` when
    #: the soak was stopped during the freeze).
    idle_frozen_s: float | None = None
    #: Invocations cut short by the fleet's abort (Ctrl-C, or a shard that died: their
    #: environments SIGKILLed by the supervisor), not recorded, as a single-environment
    #: soak drops the one it was running; their environments count as created.
    interrupted_in_flight: int = 0
    #: Supervisor processes serving the environments (1: the calling process itself), and
    #: what the forked ones reported of themselves: CPU time (their runtimes' not
    #: included) and the largest peak resident memory among them.
    shards: int = 1
    shard_cpu_s: float | None = None
    shard_peak_rss_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _mb(value: int) -> str:
    return f"{value / 2**20:.1f} MB"


def fleet_rows(fleet: FleetSummary) -> list[tuple[str, str]]:
    """The rows a fleet adds to the soak's table."""
    concurrency = str(fleet.concurrency)
    if fleet.ramp_s:
        concurrency += f" (ramp {fleet.ramp_s:g} s)"
    created = str(fleet.environments_created)
    if fleet.environments_replaced:
        created += f" ({fleet.environments_replaced} replacing a reset one)"
    rows = [
        ("concurrency", concurrency),
        ("environments created", created),
        ("peak concurrent environments", f"{fleet.peak_environments} / {fleet.concurrency}"),
        ("too many connections (failed)", str(fleet.too_many_connections)),
    ]
    peak, maximum = fleet.peak_server_connections, fleet.server_max_connections
    if peak is not None:
        shown = f"{peak} / {maximum} max_connections"
        if maximum is not None and peak > maximum:  # MariaDB counts a client it refuses
            shown += " (with clients being refused)"
        rows.append(("peak server connections", shown))
    rows.append(("RDSConnector retries (logged)", str(fleet.rds_retries)))
    rows += [(f"  code {code}", str(n)) for code, n in fleet.rds_retries_by_code.items()]
    if fleet.idle_s is not None:
        after = "-" if fleet.idle_after is None else f"after invocation {fleet.idle_after}"
        frozen = fleet.idle_frozen_s
        if frozen is None:  # stopped before half the invocations were handed out
            shown = f"{fleet.idle_s:g} s asked, not reached"
        elif frozen < fleet.idle_s - 0.05:  # stopped during it
            shown = f"{frozen:.1f} s of {fleet.idle_s:g} s (stopped) {after}"
        else:
            shown = f"{fleet.idle_s:g} s {after}"
        rows.append(("all frozen (--idle)", shown))
    if fleet.interrupted_in_flight:
        rows.append(("interrupted in flight (not recorded)", str(fleet.interrupted_in_flight)))
    start, end = fleet.supervisor_rss_start_bytes, fleet.supervisor_rss_end_bytes
    if start is not None and end is not None:
        rows.append(("supervisor memory (RSS)", f"{_mb(end)} ({(end - start) / 2**20:+.1f} MB)"))
    if fleet.shard_peak_rss_bytes is not None:
        rows.append(
            (
                "supervisor shards (peak RSS)",
                f"{fleet.shards} x {_mb(fleet.shard_peak_rss_bytes)} at most",
            )
        )
    return rows
