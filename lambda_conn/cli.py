"""``lambda-conn``: command-line entry point.

Every subcommand imports its machinery inside its own function, so ``lambda-conn --help``
and argument errors stay fast. To add a subcommand, write ``_add_<name>(subparsers)``
that sets ``func`` and call it from ``build_parser``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["build_parser", "main"]

# Kept equal to lambda_conn.local._constants (not imported: --help must stay light).
_MIN_MEMORY_MB, _MAX_MEMORY_MB, _MAX_TIMEOUT_S = 128, 10_240, 900.0


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not accepted: expected an integer >= 1")
    return number


def _non_negative_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not accepted: expected an integer >= 0")
    return number


def _memory_mb(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if not _MIN_MEMORY_MB <= number <= _MAX_MEMORY_MB:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not accepted: expected an integer number of MB "
            f"from {_MIN_MEMORY_MB} to {_MAX_MEMORY_MB}"
        )
    return number


def _timeout_s(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and 0 < number <= _MAX_TIMEOUT_S):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not accepted: expected seconds, a number more than 0 "
            f"and at most {_MAX_TIMEOUT_S:g}"
        )
    return number


def _seconds_at_least(zero_ok: bool) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or number < 0 or (number == 0 and not zero_ok):
            raise argparse.ArgumentTypeError(
                f"{value!r} is not accepted: expected seconds, a number "
                + ("0 or more" if zero_ok else "more than 0")
            )
        return number

    return parse


def _env_pair(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{value!r} is not accepted: expected KEY=VALUE")
    return key, val


# What the summary's two timings mean (in --help; the README says the same).
TIMINGS = """\
timings in the summary:
  duration  from sending the invoke until the runtime, and every extension, asked for the
            next event: what Lambda bills, including work done after the response
  response  from sending the invoke until the caller had its answer: what a client waits
            for (the response is sent before after-response work such as a recycle)
"""


FLEET = """
with --concurrency above 1 (or --ramp, --idle, --dsn) the summary adds: environments
created, peak concurrent environments, failures for "too many connections" (MySQL 1040,
PostgreSQL 53300) in rows of their own, RDSConnector retries logged by the function, the
supervisor's own memory and, with --dsn, the server's peak connections against its
max_connections (a DSN that cannot be sampled: exit 2 before the first invocation).
--plot then draws server connections, environments busy and failures over time. When C
environments of --memory MB would not fit in the memory available, the first invocation
runs alone and a concurrency whose environments (its measured RSS) do not fit is refused
with the number that fits.
"""


def _add_soak(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "soak",
        help="invoke a handler N times in a Lambda-faithful local runtime",
        description="Invoke HANDLER N times under the real awslambdaric, frozen between "
        "invocations, with Lambda's descriptor, memory and time limits; print a summary "
        "headed by the handler and its settings, and the first message of each failure type.",
        epilog=TIMINGS
        + FLEET
        + "\nexit status: 0 when every invocation succeeded; 1 when any failed or the soak\n"
        "stopped early; 2 for a usage error, a concurrency the machine's memory cannot\n"
        "hold or a --dsn that cannot be sampled; 130 when interrupted.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("handler", metavar="MODULE:FUNCTION", help="also MODULE.FUNCTION (Lambda form)")
    p.add_argument("-n", "--invocations", dest="n", type=_positive_int, required=True, metavar="N")
    p.add_argument(
        "-c",
        "--concurrency",
        type=_positive_int,
        default=1,
        metavar="C",
        help="concurrent callers (default 1: one environment); environments are created as "
        "Lambda does, a new one only when every warm one is busy, up to C",
    )
    p.add_argument(
        "--ramp",
        type=_seconds_at_least(zero_ok=True),
        metavar="S",
        help="seconds to reach full concurrency: callers join one by one, concurrency "
        "rising linearly from 1 to C over S seconds (needs C above 1)",
    )
    p.add_argument(
        "--idle",
        type=_seconds_at_least(zero_ok=False),
        metavar="S",
        help="after half the invocations, keep every environment frozen S seconds (what "
        "dies while frozen: idle timeouts, NAT flows)",
    )
    p.add_argument(
        "--dsn",
        metavar="URL",
        help="mysql://user:password@host:port/db or postgresql://...: sample the server's "
        "own count of client connections every 100 ms meanwhile (one connection of its "
        "own, excluded) and show the peak against its max_connections",
    )
    p.add_argument("--memory", type=_memory_mb, default=128, metavar="MB", help="default 128")
    p.add_argument("--timeout", type=_timeout_s, default=3.0, metavar="S", help="default 3")
    p.add_argument("--event", metavar="FILE", help="JSON event sent to every invocation")
    p.add_argument(
        "--env",
        type=_env_pair,
        action="append",
        default=[],
        metavar="K=V",
        help="function environment variable (repeatable)",
    )
    p.add_argument("--json", dest="json_path", metavar="FILE", help="write records and summary")
    p.add_argument(
        "--plot",
        metavar="FILE",
        help="descriptors and memory per invocation (.svg/.png); with a fleet option, "
        "server connections, environments busy and failures over time",
    )
    p.add_argument("--handler-dir", metavar="DIR", help="task root (default: current directory)")
    p.add_argument(
        "--logs", metavar="FILE", help="append the function's output here (default: discarded)"
    )
    p.add_argument(
        "--keep-responses",
        action="store_true",
        help="keep successful responses in the records (default: only errors are kept)",
    )
    _add_quiet(p)
    p.set_defaults(func=_run_soak, subparser=p)


def _add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress on stderr (by default: a bar on a terminal, otherwise a plain "
        "line every 10 s)",
    )


def _check_output(parser: argparse.ArgumentParser, option: str, path: str | None) -> None:
    """Fail before the soak, not after N invocations, on a path that cannot be written."""
    if not path:
        return
    if os.path.exists(path):  # /dev/stdout, a pipe, a file in a read-only directory
        if os.path.isdir(path) or not os.access(path, os.W_OK):
            parser.error(f"argument {option}: {path!r} is not accepted: not a writable file")
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        parser.error(f"argument {option}: {path!r} is not accepted: no directory {directory!r}")
    if not os.access(directory, os.W_OK):
        parser.error(f"argument {option}: {path!r} is not accepted: {directory!r} is read-only")


def _run_soak(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.subparser
    from lambda_conn.local import (
        FleetInterrupted,
        HandlerSpecError,
        ProgressBar,
        SoakInterrupted,
        check_importable,
        format_table,
        parse_handler,
        soak,
        write_plot,
    )

    handler_dir = os.path.abspath(args.handler_dir or os.getcwd())
    if not os.path.isdir(handler_dir):
        parser.error(f"argument --handler-dir: {args.handler_dir!r} is not a directory")
    try:
        check_importable(parse_handler(args.handler), handler_dir)
    except HandlerSpecError as exc:
        parser.error(str(exc))
    if args.plot and os.path.splitext(args.plot)[1].lower() not in (".svg", ".png"):
        parser.error(
            f"argument --plot: {args.plot!r} is not accepted: expected a .svg or .png file"
        )
    if args.plot and args.plot.lower().endswith(".png"):
        from importlib.util import find_spec

        if find_spec("matplotlib") is None:
            parser.error(
                f"argument --plot: {args.plot!r} needs matplotlib for PNG "
                "(pip install matplotlib); a .svg file needs nothing"
            )
    for option, path in (("--json", args.json_path), ("--plot", args.plot), ("--logs", args.logs)):
        _check_output(parser, option, path)
    from lambda_conn.local._config import check_env

    try:
        check_env(dict(args.env))
    except ValueError as exc:
        parser.error(f"argument --env: {exc}")
    event = None
    if args.event:
        try:
            with open(args.event, encoding="utf-8") as fh:
                event = json.load(fh)
        except (OSError, ValueError) as exc:
            parser.error(f"argument --event: cannot read JSON from {args.event!r}: {exc}")

    if args.ramp and args.concurrency == 1:
        parser.error(
            f"argument --ramp: {args.ramp:g} is not accepted with --concurrency 1: a ramp "
            "raises concurrency from 1 to C; expected --concurrency above 1"
        )
    if args.idle is not None and args.n < 2:
        parser.error(
            f"argument --idle: {args.idle:g} is not accepted with -n {args.n}: the freeze "
            "comes after half of the invocations; expected -n 2 or more"
        )
    if args.dsn is not None:
        from lambda_conn.local._dsn import DSNError, parse_dsn

        try:
            parse_dsn(args.dsn)
        except DSNError as exc:
            parser.error(f"argument --dsn: {exc}")
    fleet = _is_fleet(args)

    bar = ProgressBar(args.n, quiet=args.quiet)
    interrupted = False
    report: Any
    extra: list[tuple[str, str]] = []
    with contextlib.ExitStack() as stack:
        logs = stack.enter_context(open(args.logs, "ab")) if args.logs else subprocess.DEVNULL
        options: dict[str, Any] = {
            "event": event,
            "handler_dir": handler_dir,
            "memory_mb": args.memory,
            "timeout_s": args.timeout,
            "env": dict(args.env),
            "output": logs,
            "progress": bar,
            "keep_responses": args.keep_responses,
        }
        try:
            if fleet:
                from lambda_conn.local import CapacityError, fleet_soak
                from lambda_conn.local._server_sampler import SamplerError

                try:
                    report = fleet_soak(
                        args.handler,
                        args.n,
                        concurrency=args.concurrency,
                        ramp_s=args.ramp,
                        idle_s=args.idle,
                        dsn=args.dsn,
                        **options,
                    )
                except CapacityError as exc:
                    parser.error(f"argument --concurrency: {exc}")
                except SamplerError as exc:  # before the first invocation
                    print(f"lambda-conn soak: argument --dsn: {exc}", file=sys.stderr)
                    return 2
            else:
                report = soak(args.handler, args.n, **options)
        except (SoakInterrupted, FleetInterrupted) as exc:  # Ctrl-C: show what was measured
            report, interrupted = exc.report, True
        finally:
            bar.finish()
    if fleet:
        from lambda_conn.local import fleet_rows

        extra = fleet_rows(report.fleet)
    print(
        format_table(
            report.summary,
            rate=report.rate,
            memory_mb=args.memory,
            heading=_heading(args, handler_dir),
            extra=extra,
        )
    )
    if report.stopped_early:
        print(f"stopped early: {report.stopped_early}", file=sys.stderr)
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as fh:
            json.dump(report.to_dict(), fh, indent=1, default=repr)
        print(f"records written to {args.json_path}", file=sys.stderr)
    if args.plot and report.records and fleet:
        from lambda_conn.local._fleet_report import too_many_connections
        from lambda_conn.local._plot import write_fleet_plot

        write_fleet_plot(
            report.records,
            report.started_s,
            args.plot,
            series=report.server,
            started_at=report.started_at,
            concurrency=args.concurrency,
            too_many=too_many_connections,
            title=f"lambda-conn soak {args.handler}",
        )
        print(f"plot written to {args.plot}", file=sys.stderr)
    elif args.plot and report.records:
        write_plot(
            report.records,
            args.plot,
            title=f"lambda-conn soak {args.handler}",
            memory_mb=args.memory,
        )
        print(f"plot written to {args.plot}", file=sys.stderr)
    if interrupted:
        return 130
    return 1 if report.failed or report.stopped_early else 0


def _is_fleet(args: argparse.Namespace) -> bool:
    """Any fleet option given: else the single-environment soak, its output unchanged."""
    return (
        args.concurrency > 1
        or args.ramp is not None
        or args.idle is not None
        or args.dsn is not None
    )


def _heading(args: argparse.Namespace, handler_dir: str) -> list[str]:
    """What was soaked and how: the handler and every setting (env values and the DSN's
    credentials not shown)."""
    settings = [f"{args.n} invocations"]
    if _is_fleet(args):
        settings.append(f"concurrency {args.concurrency}")
        if args.ramp is not None:
            settings.append(f"ramp {args.ramp:g} s")
        if args.idle is not None:
            settings.append(f"idle {args.idle:g} s")
        if args.dsn is not None:
            from lambda_conn.local._dsn import parse_dsn

            settings.append(f"server {parse_dsn(args.dsn).shown}")
    settings += [
        f"memory {args.memory} MB",
        f"timeout {args.timeout:g} s",
        f"event {args.event}" if args.event else "event null",
    ]
    if args.env:
        settings.append("env " + ", ".join(sorted({key for key, _ in args.env})))
    return [
        f"lambda-conn soak {args.handler} (task root {handler_dir})",
        ", ".join(settings),
    ]


# Kept equal to lambda_conn.local._fanout's defaults (not imported: --help must stay light).
_FANOUT_N, _FANOUT_CONCURRENCY, _FANOUT_MAX, _FANOUT_HOLD_MS = 400, 16, 10, 20

FANOUT = f"""
with --fanout: one SELECT 1, four designs (unprotected; closed per invocation with
@managed_connection; one reused connection per environment; RDSConnector, per invocation
with retried connects), each as a fleet of --concurrency environments (default
{_FANOUT_CONCURRENCY}) against a server with a small max_connections (default
{_FANOUT_MAX}): a private MariaDB when mariadbd is installed, else the embedded server
with the same limit, or the server --dsn names. Each request holds its connection
--hold-ms (default {_FANOUT_HOLD_MS}). The table shows which designs survive.
"""


def _add_demo(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "demo",
        help="soak a leaky, a protected and a health-guarded handler side by side",
        description="Soak three handlers under the local runtime: a leaky one unprotected, "
        "the same with @managed_connection, and a leak no library can close with "
        "FD_HEALTH_LIMIT set. Uses an embedded MySQL-protocol server unless --dsn is given.",
        epilog=FANOUT
        + "\nexit status: 0 when the protected rows (2 and 3) had no failed request, which\n"
        "is the point of the demo (row 1, unprotected, is expected to fail); 1 when a\n"
        "protected row failed; 2 when --dsn cannot be queried, or for a usage error.\n"
        "With --fanout: 0 when every failure was too many connections; 1 when a request\n"
        "failed for another reason; 2 as without; 130 on Ctrl-C (the table so far).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--dsn",
        metavar="URL",
        help="mysql://user:password@host:port/db[?ssl_ca=FILE] instead of the embedded server",
    )
    p.add_argument(
        "-n",
        "--invocations",
        dest="n",
        type=_positive_int,
        default=None,
        metavar="N",
        help=f"invocations per handler (default 1500; {_FANOUT_N} per design with --fanout)",
    )
    p.add_argument(
        "--fanout",
        action="store_true",
        help="the fan-out comparison: many environments at once against a small "
        "max_connections (see below)",
    )
    p.add_argument(
        "-c",
        "--concurrency",
        type=_positive_int,
        metavar="C",
        help=f"with --fanout: concurrent callers (default {_FANOUT_CONCURRENCY})",
    )
    p.add_argument(
        "--max-connections",
        type=_positive_int,
        metavar="M",
        help=f"with --fanout: the private server's max_connections (default {_FANOUT_MAX}; "
        "MariaDB's minimum is 10)",
    )
    p.add_argument(
        "--hold-ms",
        type=_non_negative_int,
        metavar="MS",
        help=f"with --fanout: each request's work with its connection held (default "
        f"{_FANOUT_HOLD_MS})",
    )
    p.add_argument(
        "--server",
        choices=("auto", "mariadb", "embedded"),
        help="with --fanout: auto (default: a private MariaDB when mariadbd is installed, "
        "else the embedded server), mariadb or embedded",
    )
    p.add_argument(
        "--plot",
        metavar="FILE",
        help="write an SVG of descriptors and memory per invocation here (default: none)",
    )
    p.add_argument("--json", dest="json_path", metavar="FILE", help="write every record")
    _add_quiet(p)
    p.set_defaults(func=_run_demo, subparser=p)


def _run_demo(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.subparser
    if args.dsn is not None and not args.dsn.startswith("mysql://"):
        from lambda_conn._redact import redact

        shown = redact(args.dsn)
        parser.error(f"argument --dsn: {shown!r} is not accepted: expected mysql://...")
    if args.plot and not args.plot.lower().endswith(".svg"):
        parser.error(f"argument --plot: {args.plot!r} is not accepted: expected a .svg file")
    for option, path in (("--plot", args.plot), ("--json", args.json_path)):
        _check_output(parser, option, path)
    if args.fanout:
        return _run_fanout(args, parser)
    for option, value in (
        ("--concurrency", args.concurrency),
        ("--max-connections", args.max_connections),
        ("--hold-ms", args.hold_ms),
        ("--server", args.server),
    ):
        if value is not None:
            parser.error(f"argument {option}: {value!r} is not accepted without --fanout")
    from lambda_conn.local._demo import run_demo

    return run_demo(
        dsn=args.dsn,
        invocations=args.n or 1500,
        plot=args.plot or None,
        json_path=args.json_path,
        quiet=args.quiet,
    )


def _run_fanout(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    server = args.server or "auto"
    if args.dsn is not None and (args.max_connections is not None or args.server is not None):
        option = "--max-connections" if args.max_connections is not None else "--server"
        parser.error(
            f"argument {option}: not accepted with --dsn (the server it names has its own "
            "max_connections)"
        )
    maximum = args.max_connections or _FANOUT_MAX
    if args.dsn is None and maximum < 10 and server != "embedded":
        from lambda_conn.local._private_mariadb import find_mariadbd

        if server == "mariadb" or find_mariadbd() is not None:
            parser.error(
                f"argument --max-connections: {maximum} is not accepted: MariaDB's minimum "
                "is 10 (--server embedded takes any limit from 1)"
            )
    if server == "mariadb":
        from lambda_conn.local._private_mariadb import find_mariadbd

        if find_mariadbd() is None:
            parser.error(
                "argument --server: 'mariadb' is not accepted: mariadbd and "
                "mariadb-install-db are not installed (Debian: apt-get install mariadb-server)"
            )
    from lambda_conn.local._fanout import run_fanout

    return run_fanout(
        dsn=args.dsn,
        invocations=args.n or _FANOUT_N,
        concurrency=args.concurrency or _FANOUT_CONCURRENCY,
        max_connections=maximum,
        hold_ms=_FANOUT_HOLD_MS if args.hold_ms is None else args.hold_ms,
        server=server,
        plot=args.plot or None,
        json_path=args.json_path,
        quiet=args.quiet,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lambda-conn", description="Tools for connection-safe AWS Lambda handlers."
    )
    from lambda_conn._version import __version__

    parser.add_argument("--version", action="version", version=f"lambda-conn {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_soak(subparsers)
    _add_demo(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status (2 for usage errors, as argparse)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except RuntimeError as exc:
        from lambda_conn.local._environment import DescriptorLimitError

        if not isinstance(exc, DescriptorLimitError):
            raise
        # the machine, not the handler, before any result: said plainly, not a traceback
        print(f"lambda-conn {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
