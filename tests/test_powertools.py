"""@managed_connection stacked with the real Powertools for AWS Lambda decorators.

Logger.inject_lambda_context, Metrics.log_metrics and Tracer.capture_lambda_handler, each
above and below @managed_connection and all three together in both orders: connections are
closed on a private PostgreSQL's side, the handler's result or exception comes out intact,
and the Lambda context reaches the handler unchanged.

In the stacking matrix the Tracer runs with POWERTOOLS_TRACE_DISABLED=true: Powertools
disables it by itself outside Lambda (no LAMBDA_TASK_ROOT), an enabled one sends segments
to an X-Ray daemon, and X-Ray's recorder is process-global; the decorator still wraps and
calls the handler the same way. One test runs it enabled, in a subprocess, against a fake
daemon on loopback. Tracer() needs aws-xray-sdk (the ``aws-lambda-powertools[tracer]``
extra) even when disabled.

lambda_conn's own metrics go through Powertools when it is in use (lambda_conn._metrics),
and stay plain EMF lines without it (checked in a subprocess that never imports it).
"""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

from lambda_conn import managed_connection
from lambda_conn._metrics import NAMESPACE, emf_record, powertools_in_use, put_metric
from tests.servers.fds import open_fds


class FakeLambdaContext:
    """The attributes Powertools reads from the Lambda context object."""

    function_name = "orders"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:orders"
    memory_limit_in_mb = 512
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e812345678"
    log_group_name = "/aws/lambda/orders"
    log_stream_name = "2024/01/01/[$LATEST]abc"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def stdout_json(out: str) -> list[Any]:
    lines = []
    for line in out.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def emf_blobs(out: str) -> list[dict[str, Any]]:
    return [d for d in stdout_json(out) if isinstance(d, dict) and "_aws" in d]


_loggers = itertools.count()


@pytest.fixture
def powertools(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Fresh Powertools objects. The Logger writes to its own buffer (it keeps the stream
    it was created with, and one set-up per name: each test gets its own name)."""
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "orders")
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    monkeypatch.delenv("POWERTOOLS_DEV", raising=False)
    metrics = Metrics(namespace="Shop")
    log_stream = io.StringIO()
    tools = {
        "logger": Logger(service=f"orders-{next(_loggers)}", stream=log_stream),
        "log": log_stream,
        "metrics": metrics,
        "tracer": Tracer(service="orders"),
    }
    yield tools
    metrics.clear_metrics()


def powertools_decorator(tools: dict[str, Any], name: str) -> Callable[[Any], Any]:
    if name == "logger":
        return tools["logger"].inject_lambda_context  # type: ignore[no-any-return]
    if name == "metrics":
        return tools["metrics"].log_metrics  # type: ignore[no-any-return]
    return tools["tracer"].capture_lambda_handler  # type: ignore[no-any-return]


STACKS = [
    pytest.param(["logger"], "above", id="logger-above"),
    pytest.param(["logger"], "below", id="logger-below"),
    pytest.param(["metrics"], "above", id="metrics-above"),
    pytest.param(["metrics"], "below", id="metrics-below"),
    pytest.param(["tracer"], "above", id="tracer-above"),
    pytest.param(["tracer"], "below", id="tracer-below"),
    pytest.param(["tracer", "logger", "metrics"], "above", id="all-above"),
    pytest.param(["tracer", "logger", "metrics"], "below", id="all-below"),
]


def stack(
    tools: dict[str, Any], names: list[str], position: str, fn: Callable[..., Any]
) -> Callable[..., Any]:
    """Apply the Powertools decorators (outermost first) above or below
    @managed_connection(on_leak="raise")."""

    def apply_powertools(f: Callable[..., Any]) -> Callable[..., Any]:
        for name in reversed(names):
            f = powertools_decorator(tools, name)(f)
        return f

    managed = managed_connection(on_leak="raise")
    if position == "above":  # @powertools... / @managed_connection / def handler
        return apply_powertools(managed(fn))
    return managed(apply_powertools(fn))  # @managed_connection / @powertools... / def


@pytest.mark.parametrize(("names", "position"), STACKS)
def test_result_context_and_closing_survive_the_stack(
    postgres: Any,
    powertools: dict[str, Any],
    names: list[str],
    position: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before_ids = postgres.session_ids(user=None)
    context = FakeLambdaContext()
    event = {"order": 7}
    seen: dict[str, Any] = {}

    def handler(ev: dict[str, Any], ctx: Any) -> dict[str, Any]:
        seen["event"], seen["context"] = ev, ctx
        conn = psycopg.connect(**postgres.connect_kwargs())  # never closed by the handler
        seen["conn"] = conn
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        powertools["metrics"].add_metric(name="OrderPlaced", unit=MetricUnit.Count, value=1)
        powertools["logger"].info("order placed")
        return {"statusCode": 200, "pid": row[0]}

    wrapped = stack(powertools, names, position, handler)
    fds = open_fds()
    result = wrapped(event, context)
    assert result["statusCode"] == 200
    assert seen["event"] is event and seen["context"] is context
    assert seen["conn"].closed
    assert postgres.wait_new_sessions_gone(before_ids) == []
    assert result["pid"] not in {s["pid"] for s in postgres.client_sessions()}
    assert open_fds() == fds

    out = stdout_json(capsys.readouterr().out)
    if "logger" in names:  # Powertools saw the same context through lambda_conn's wrapper
        logged = stdout_json(powertools["log"].getvalue())
        (log,) = [line for line in logged if line.get("message") == "order placed"]
        assert log["function_request_id"] == context.aws_request_id
        assert log["function_name"] == context.function_name
    if "metrics" in names:  # flushed once, after the handler, in the function's namespace
        (blob,) = [b for b in out if isinstance(b, dict) and "OrderPlaced" in b]
        assert blob["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Shop"


@pytest.mark.parametrize(("names", "position"), STACKS)
def test_exception_survives_the_stack_and_still_closes(
    postgres: Any, powertools: dict[str, Any], names: list[str], position: str
) -> None:
    before_ids = postgres.session_ids(user=None)
    error = LookupError("no such order")
    conns: list[Any] = []

    def handler(ev: dict[str, Any], ctx: Any) -> None:
        conn = psycopg.connect(**postgres.connect_kwargs())
        conns.append(conn)
        conn.execute("SELECT 1")
        powertools["metrics"].add_metric(name="OrderFailed", unit=MetricUnit.Count, value=1)
        raise error

    wrapped = stack(powertools, names, position, handler)
    with pytest.raises(LookupError) as info:
        wrapped({}, FakeLambdaContext())
    assert info.value is error
    assert conns[0].closed
    assert postgres.wait_new_sessions_gone(before_ids) == []


def test_async_handler_under_logger(postgres: Any, powertools: dict[str, Any]) -> None:
    """Powertools' decorators are sync; an async handler below them is awaited by the
    caller, and @managed_connection closes what it opened when the coroutine ends."""
    before_ids = postgres.session_ids(user=None)
    import asyncio

    conns: list[Any] = []

    @powertools["logger"].inject_lambda_context
    @managed_connection(on_leak="raise")
    async def handler(ev: dict[str, Any], ctx: Any) -> int:
        conn = await psycopg.AsyncConnection.connect(**postgres.connect_kwargs())
        conns.append(conn)
        await conn.execute("SELECT 1")
        return 1

    assert asyncio.run(handler({}, FakeLambdaContext())) == 1
    assert conns[0].closed
    assert postgres.wait_new_sessions_gone(before_ids) == []


# ----------------------------------------------------------------------------- metrics

GUARD_DIMENSIONS = {"FunctionName": "orders", "Action": "recycle"}
GUARD_PROPERTIES = {
    "Reason": "fd",
    "RequestId": "c6af9ac6-7b61-11e6-9a41-93e812345678",
    "Measured": 700,
    "Limit": 512,
    "Trigger": None,
}


def test_metric_goes_through_powertools_with_its_own_identity(
    powertools: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert powertools_in_use()
    route = put_metric(
        "HealthLimitExceeded", 1, dimensions=GUARD_DIMENSIONS, properties=GUARD_PROPERTIES
    )
    assert route == "powertools"
    (blob,) = emf_blobs(capsys.readouterr().out)
    (directive,) = blob["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == NAMESPACE
    # POWERTOOLS_SERVICE_NAME is set, yet no "service" dimension: same metric as plain EMF
    assert directive["Dimensions"] == [["FunctionName", "Action"]]
    assert directive["Metrics"] == [{"Name": "HealthLimitExceeded", "Unit": "Count"}]
    assert blob["service"] == "orders"  # kept, as a property
    assert blob["FunctionName"] == "orders" and blob["Action"] == "recycle"
    assert {k: blob[k] for k in GUARD_PROPERTIES} == GUARD_PROPERTIES


def test_the_health_guards_own_report_goes_through_powertools(
    powertools: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """The guard's real call path (report.emit), not only put_metric."""
    from lambda_conn._guard import report

    fields = {"reason": "fd", "request_id": "req-9", "measured": 700, "limit": 512}
    report.emit("recycle", fields, "orders", True)
    (blob,) = emf_blobs(capsys.readouterr().out)
    (directive,) = blob["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == NAMESPACE
    assert directive["Dimensions"] == [["FunctionName", "Action"]]
    assert blob["service"] == "orders"  # Powertools' identity, kept as a property
    assert blob["HealthLimitExceeded"] == [1.0] and blob["RequestId"] == "req-9"


@pytest.mark.parametrize("position", ["above", "below"])
def test_metric_inside_log_metrics_is_its_own_blob(
    powertools: dict[str, Any], position: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Emitted at once, never merged into the function's metric set: the function's
    metrics keep their namespace and dimensions whatever the decorator order."""

    def handler(ev: dict[str, Any], ctx: Any) -> str:
        powertools["metrics"].add_metric(name="OrderPlaced", unit=MetricUnit.Count, value=1)
        assert put_metric("ConnectionsLeaked", 2, dimensions={"FunctionName": "orders"}) == (
            "powertools"
        )
        return "ok"

    wrapped = stack(powertools, ["metrics"], position, handler)
    assert wrapped({}, FakeLambdaContext()) == "ok"
    blobs = emf_blobs(capsys.readouterr().out)
    ours = [b for b in blobs if "ConnectionsLeaked" in b]
    theirs = [b for b in blobs if "OrderPlaced" in b]
    assert len(ours) == 1 and len(theirs) == 1
    assert ours[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == NAMESPACE
    assert "ConnectionsLeaked" not in theirs[0]
    assert theirs[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Shop"
    assert theirs[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]


def test_powertools_metrics_switch_is_honoured(
    powertools: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    assert put_metric("HealthLimitExceeded", 1, dimensions={"Action": "report"}) == "disabled"
    assert emf_blobs(capsys.readouterr().out) == []


def test_powertools_failure_falls_back_to_plain_emf(
    powertools: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import aws_lambda_powertools.metrics as pt_metrics

    def broken(**kwargs: Any) -> Any:
        raise RuntimeError("powertools changed")

    monkeypatch.setattr(pt_metrics, "single_metric", broken)
    assert put_metric("HealthLimitExceeded", 1, dimensions={"Action": "report"}) == "emf"
    (blob,) = emf_blobs(capsys.readouterr().out)
    assert blob["HealthLimitExceeded"] == 1


PLAIN_EMF_SCRIPT = """
import json, sys
from lambda_conn._metrics import put_metric
route = put_metric("HealthLimitExceeded", 1, dimensions={"Action": "report"},
                   properties={"Reason": "memory"}, timestamp_ms=1)
print(json.dumps({"route": route,
                  "powertools_imported": any(m.startswith("aws_lambda_powertools")
                                             for m in sys.modules)}))
"""


def test_without_powertools_a_plain_emf_line_and_no_import() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PLAIN_EMF_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    emf_line, summary = (json.loads(line) for line in proc.stdout.splitlines())
    assert summary == {"route": "emf", "powertools_imported": False}
    assert emf_line == emf_record(
        "HealthLimitExceeded",
        1,
        dimensions={"Action": "report"},
        properties={"Reason": "memory"},
        timestamp_ms=1,
    )


def test_example_powertools_handler(
    postgres: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before_ids = postgres.session_ids(user=None)
    import importlib.util
    from pathlib import Path

    monkeypatch.setenv("DATABASE_URL", postgres.conninfo())
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    path = Path(__file__).resolve().parents[1] / "examples" / "powertools_handler.py"
    spec = importlib.util.spec_from_file_location("example_powertools_handler", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    try:
        result = example.handler({}, FakeLambdaContext())
    finally:
        example.metrics.clear_metrics()
    assert result["statusCode"] == 200 and result["sessions"] >= 1
    assert postgres.wait_new_sessions_gone(before_ids) == []
    (blob,) = [b for b in emf_blobs(capsys.readouterr().out) if "SessionsSeen" in b]
    assert blob["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Shop"


TRACED_SCRIPT = """
import json, os
import psycopg
from aws_lambda_powertools import Tracer
from lambda_conn import managed_connection

tracer = Tracer(service="orders", auto_patch=False)

class Context:
    function_name = "orders"
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e812345678"
    memory_limit_in_mb = 128
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:orders"

CONTEXT = Context()

def handler(event, context):
    conn = psycopg.connect(os.environ["DATABASE_URL"])
    conn.execute("SELECT 1")
    return {"same_context": context is CONTEXT, "closed_yet": conn.closed}

if os.environ["ORDER"] == "tracer-above":
    handler = tracer.capture_lambda_handler(managed_connection(on_leak="raise")(handler))
else:
    handler = managed_connection(on_leak="raise")(tracer.capture_lambda_handler(handler))
print(json.dumps(handler({}, CONTEXT)))
"""


@pytest.mark.parametrize("order", ["tracer-above", "tracer-below"])
def test_enabled_tracer_sends_its_segment(postgres: Any, tmp_path: Any, order: str) -> None:
    """The Tracer for real, in a subprocess (X-Ray's recorder is process-global): Lambda mode
    (LAMBDA_TASK_ROOT and a trace header), segments sent to a fake X-Ray daemon, a UDP
    socket on loopback. The handler's subsegment carries the handler's response."""
    before_ids = postgres.session_ids(user=None)
    import os
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as daemon:
        daemon.bind(("127.0.0.1", 0))
        daemon.settimeout(20)
        env = {
            **os.environ,
            "ORDER": order,
            "DATABASE_URL": postgres.conninfo(),
            "LAMBDA_TASK_ROOT": str(tmp_path),
            "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{daemon.getsockname()[1]}",
            "_X_AMZN_TRACE_ID": (
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
            ),
            "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        }
        env.pop("POWERTOOLS_TRACE_DISABLED", None)
        proc = subprocess.run(
            [sys.executable, "-c", TRACED_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout.splitlines()[-1])
        datagram, _ = daemon.recvfrom(65535)
    header, document = datagram.split(b"\n", 1)
    assert json.loads(header) == {"format": "json", "version": 1}
    segment = json.loads(document)
    assert segment["name"] == "## handler"
    assert segment["metadata"]["orders"]["handler response"] == result
    assert result == {"same_context": True, "closed_yet": False}
    assert postgres.wait_new_sessions_gone(before_ids) == []
