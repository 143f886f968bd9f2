"""A Lambda-faithful local runtime: the real awslambdaric, frozen between invocations.

Import cost is paid only by tests and the CLI: ``lambda_conn`` never imports this package.
"""

from lambda_conn.local._capacity import CapacityError
from lambda_conn.local._fleet import FleetInterrupted, FleetReport, fleet_soak
from lambda_conn.local._fleet_report import FleetSummary, fleet_rows
from lambda_conn.local._handler_spec import (
    HandlerSpec,
    HandlerSpecError,
    check_importable,
    parse_handler,
)
from lambda_conn.local._lambda import LocalLambda
from lambda_conn.local._plot import render_fleet_svg, render_svg, write_fleet_plot, write_plot
from lambda_conn.local._progress import ProgressBar
from lambda_conn.local._records import InvocationRecord, Outcome, ShutdownRecord
from lambda_conn.local._report import SoakSummary, format_table, summarize
from lambda_conn.local._server_sampler import SamplerError, ServerSampler, ServerSeries
from lambda_conn.local._soak import SoakInterrupted, SoakReport, soak

__all__ = [
    "CapacityError",
    "FleetInterrupted",
    "FleetReport",
    "FleetSummary",
    "HandlerSpec",
    "HandlerSpecError",
    "InvocationRecord",
    "LocalLambda",
    "Outcome",
    "ProgressBar",
    "SamplerError",
    "ServerSampler",
    "ServerSeries",
    "ShutdownRecord",
    "SoakInterrupted",
    "SoakReport",
    "SoakSummary",
    "check_importable",
    "fleet_rows",
    "fleet_soak",
    "format_table",
    "parse_handler",
    "render_fleet_svg",
    "render_svg",
    "soak",
    "summarize",
    "write_fleet_plot",
    "write_plot",
]
