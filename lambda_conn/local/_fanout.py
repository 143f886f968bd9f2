"""``lambda-conn demo --fanout``: one SELECT 1, four designs, many environments at once.

The outage fan-out causes is the database's: each execution environment opens (and with
reuse keeps) its own connections, and at a concurrency above what the server allows the
server answers "too many connections". Each design runs as a fleet soak
(``fleet_soak``: environments created as Lambda creates them, up to the concurrency)
against one server with a small ``max_connections``, sampled by a ServerSampler:

1. unprotected: connects per request and never closes (``atexit``): runs out at once;
2. per-invocation close (``@managed_connection``): one connection per request in flight;
3. reused connection (``reused_connection``): one per environment, kept while it lives;
4. RDSConnector: per invocation, a refused connect retried with jittered backoff.

The server is the one ``--dsn`` names, else a private MariaDB when ``mariadbd`` is
installed (lambda_conn/local/_private_mariadb.py), else the embedded server with the same
connection limit (lambda_conn/local/_embedded_mysql.py).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import IO, Any

from lambda_conn.local._progress import ProgressBar
from lambda_conn.local._server_sampler import SamplerError, ServerSampler, ServerSeries

TYPE_CHECKING = False
if TYPE_CHECKING:
    from lambda_conn.local._fleet import FleetReport

__all__ = ["FANOUT_CASES", "SERVERS", "FanoutRow", "format_fanout_table", "run_fanout"]

_HANDLERS = "lambda_conn.local._demo_handlers"
FANOUT_CASES: tuple[tuple[str, str], ...] = (
    ("1. unprotected", f"{_HANDLERS}.unprotected"),
    ("2. per-invocation close", f"{_HANDLERS}.protected"),
    ("3. reused connection", f"{_HANDLERS}.reused"),
    ("4. RDSConnector", f"{_HANDLERS}.rds_connector"),
)
DEFAULT_CONCURRENCY = 16
DEFAULT_MAX_CONNECTIONS = 10  # MariaDB's smallest
DEFAULT_INVOCATIONS = 400
#: Each request's work with its connection held, besides the SELECT 1 (ms): a real handler
#: holds its connection for its queries, and that is what makes requests overlap.
DEFAULT_HOLD_MS = 20
#: How long the server may take to see the last design's connections gone.
_DRAIN_S = 15.0


@dataclass(frozen=True)
class FanoutRow:
    """One design's fleet soak and what the server saw meanwhile."""

    title: str
    report: FleetReport
    series: ServerSeries

    @property
    def too_many(self) -> int:
        return self.report.fleet.too_many_connections

    @property
    def other_failures(self) -> int:
        return self.report.summary.failed - self.too_many

    def cells(self) -> list[str]:
        summary, fleet = self.report.summary, self.report.fleet
        return [
            self.title,
            str(summary.invocations),
            str(summary.succeeded),
            str(self.too_many),
            str(self.other_failures),
            f"{fleet.environments_created} ({fleet.peak_environments} at once)",
            f"{self.series.peak} / {self.series.max_connections}",
            str(fleet.rds_retries),
            "yes" if summary.failed == 0 else "no",
        ]

    def to_dict(self) -> dict[str, Any]:
        """The fleet report's (its ``server`` samples on the soak's clock)."""
        return self.report.to_dict()


_HEADER = [
    "design",
    "invocations",
    "succeeded",
    "too many connections",
    "other failures",
    "environments",
    "peak server connections / max",
    "RDSConnector retries",
    "survived",
]


def format_fanout_table(rows: list[FanoutRow]) -> str:
    cells = [row.cells() for row in rows]
    widths = [max(len(r[i]) for r in [_HEADER, *cells]) for i in range(len(_HEADER))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(_HEADER, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


SERVERS = ("auto", "mariadb", "embedded")


@contextlib.contextmanager
def _server(dsn: str | None, server: str, max_connections: int, out: IO[str]) -> Any:
    """The DSN given, a private MariaDB (``auto`` when mariadbd is installed), or the
    embedded server; yields (dsn, label)."""
    if dsn is not None:
        yield dsn, "the server --dsn names"
        return
    from lambda_conn.local._private_mariadb import PrivateMariaDB, find_mariadbd

    if server == "mariadb" or (server == "auto" and find_mariadbd() is not None):
        print(f"Starting a private MariaDB (max_connections={max_connections}) ...", file=out)
        with PrivateMariaDB(max_connections=max_connections) as db:
            yield db.dsn, f"private MariaDB on 127.0.0.1:{db.port}"
        return
    from lambda_conn.local._embedded_mysql import EmbeddedMySQL

    with EmbeddedMySQL(max_connections=max_connections) as embedded:
        yield embedded.dsn, f"embedded MySQL-protocol server on 127.0.0.1:{embedded.port}"


def _clients(dsn: str) -> int:
    """The server's client connections now (the sampler's own excluded)."""
    with ServerSampler(dsn) as sampler:
        return sampler.series.counts[0]


def _drained(dsn: str, baseline: int) -> int:
    """Wait until the server counts no more clients than ``baseline`` (those it had before
    the demo: a --dsn server has others) so designs do not overlap: environments that
    died with connections open are seen gone a moment later. Returns the last count."""
    with ServerSampler(dsn, interval_s=0.05) as sampler:
        deadline = time.monotonic() + _DRAIN_S
        while sampler.series.counts[-1] > baseline and time.monotonic() < deadline:
            time.sleep(0.05)
        return sampler.series.counts[-1]


def run_fanout(
    *,
    dsn: str | None = None,
    invocations: int = DEFAULT_INVOCATIONS,
    concurrency: int = DEFAULT_CONCURRENCY,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    hold_ms: int = DEFAULT_HOLD_MS,
    server: str = "auto",
    plot: str | None = None,
    json_path: str | None = None,
    out: IO[str] = sys.stdout,
    quiet: bool = False,
    cases: tuple[tuple[str, str], ...] = FANOUT_CASES,
) -> int:
    """Soak each design as a fleet and print the table. Returns the exit status: 0 when
    every failure was "too many connections" (what the designs are compared on), 1 when
    a request failed for another reason (the demo itself broke), 2 when the server
    cannot be sampled (before any invocation), 130 on Ctrl-C (the table so far, every
    environment and the private server gone).

    ``server``: ``auto`` (a private MariaDB when mariadbd is installed, else the embedded
    server), ``mariadb`` or ``embedded``; ignored with ``dsn``.
    """
    if isinstance(hold_ms, bool) or not isinstance(hold_ms, int) or hold_ms < 0:
        raise ValueError(f"hold_ms={hold_ms!r} is not accepted: expected an integer >= 0")
    if server not in SERVERS:
        raise ValueError(f"server={server!r} is not accepted: expected one of {SERVERS}")
    from lambda_conn.local._fleet import FleetInterrupted, fleet_soak
    from lambda_conn.local._fleet_report import too_many_connections

    rows: list[FanoutRow] = []
    interrupted = False
    with _server(dsn, server, max_connections, out) as (url, label):
        try:
            baseline = _clients(url)  # a --dsn server may have clients of its own
        except SamplerError as exc:  # before any invocation
            print(f"cannot sample the server: {exc}", file=out)
            return 2
        print(
            f"{label}; {concurrency} concurrent callers, {invocations} invocations per design, "
            f"each holding its connection {hold_ms} ms",
            file=out,
        )
        started = time.perf_counter()
        for title, handler in cases:
            if not quiet:
                print(f"{title} ({handler})", file=sys.stderr)
            if rows:
                _drained(url, baseline)
            bar = ProgressBar(invocations, quiet=quiet)
            try:
                report = fleet_soak(
                    handler,
                    invocations,
                    concurrency=concurrency,
                    dsn=url,  # sampled meanwhile: report.server
                    event={"demo": "fanout", "hold_ms": hold_ms},
                    env={"LAMBDA_CONN_DEMO_DSN": url},
                    output=subprocess.DEVNULL,
                    progress=bar,
                )
            except FleetInterrupted as exc:  # Ctrl-C: every environment is gone already
                report, interrupted = exc.report, True
            except SamplerError as exc:  # the server full or gone: before this design ran
                print(f"cannot sample the server: {exc}", file=out)
                return 2
            finally:
                bar.finish()
            assert report.server is not None, "fleet_soak(dsn=...) samples the server"
            rows.append(FanoutRow(title, report, report.server))
            if interrupted:
                break
        elapsed = time.perf_counter() - started
    print(format_fanout_table(rows), file=out)
    print(
        f"\n{sum(len(r.report.records) for r in rows)} invocations in {elapsed:.1f} s. "
        "Peak server connections exclude the sampler's own (it holds one of the max).",
        file=out,
    )
    for row in rows:
        for kind, seen in row.report.summary.first_failures.items():
            print(
                f"{row.title}: first {kind} at invocation {seen['invocation']}: {seen['message']}",
                file=out,
            )
    if plot:
        from lambda_conn.local._plot import render_fleet_svg, stack_svgs

        svgs = [
            render_fleet_svg(
                row.report.records,
                row.report.started_s,
                series=row.series,
                started_at=row.report.started_at,
                concurrency=concurrency,
                too_many=too_many_connections,
                title=row.title,
            )
            for row in rows
        ]
        with open(plot, "w", encoding="utf-8") as fh:
            fh.write(stack_svgs(svgs))
        print(f"Plot of server connections, environments busy and failures: {plot}", file=out)
    if json_path:
        with open(json_path, "w", encoding="utf-8") as fh:
            json.dump({row.title: row.to_dict() for row in rows}, fh, indent=1, default=repr)
    if interrupted:
        print(f"\ninterrupted during {rows[-1].title}: the table so far", file=out)
        return 130
    broken = [row.title for row in rows if row.other_failures]
    if broken:
        print(
            f"\nFAILED: {', '.join(broken)}: failures other than too many connections.",
            file=out,
        )
        return 1
    return 0
