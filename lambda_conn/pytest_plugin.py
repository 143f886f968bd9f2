"""The pytest plugin: find a connection leak in a unit test, before it reaches Lambda.

Registered through the ``pytest11`` entry point, so it loads wherever lambda-conn is
installed, and does nothing until enabled: ``pytest --lambda-conn`` or ``lambda_conn = true``
in the ini file. Then every test runs inside a scope that tracks the connections it opens;
one still open when the test returns fails it (``on_leak="raise"``, the default) or warns
(``--lambda-conn-on-leak=report``), and is closed either way, so nothing leaks into the
next test. ``@pytest.mark.lambda_conn_exempt`` leaves a test alone.

Fixtures (always available): ``lambda_context``, a realistic Lambda context whose remaining
time runs down; ``local_lambda``, a :class:`lambda_conn.local.LocalLambda` for the handler
named by ``@pytest.mark.local_lambda("app.handler", ...)`` or the ``lambda_conn_handler`` ini
option, closed after the test.

Needs pytest 8 or later. Imports nothing from lambda_conn until a fixture or the option
needs it, so merely having the package installed costs a test run nothing.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["FakeLambdaContext", "LeakWarning"]

ON_LEAK = ("raise", "report")
EXEMPT = "lambda_conn_exempt"
_HINT = (
    "close it in the test or the code under test, decorate the handler with "
    f"@managed_connection, or mark the test @pytest.mark.{EXEMPT}"
)


class LeakWarning(UserWarning):
    """A test left a tracked connection open (``--lambda-conn-on-leak=report``)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lambda-conn", "lambda-conn: connection leaks in tests")
    group.addoption(
        "--lambda-conn",
        action="store_true",
        default=None,
        help="run every test inside a lambda-conn scope: a connection the test leaves open "
        "fails it (see --lambda-conn-on-leak). Also the ini option lambda_conn = true.",
    )
    group.addoption(
        "--lambda-conn-on-leak",
        choices=ON_LEAK,
        default=None,
        help="what a connection left open does: raise (fail the test, the default) or "
        "report (a LeakWarning). Also the ini option lambda_conn_on_leak.",
    )
    parser.addini("lambda_conn", "enable the lambda-conn leak check (true/false)", type="bool")
    parser.addini("lambda_conn_on_leak", "raise (default) or report", default="raise")
    parser.addini("lambda_conn_handler", "handler for the local_lambda fixture (module.function)")
    parser.addini(
        "lambda_conn_handler_dir",
        "task root for the local_lambda fixture, relative to the rootdir (default: rootdir)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{EXEMPT}: do not run this test inside the lambda-conn leak check"
    )
    config.addinivalue_line(
        "markers",
        "local_lambda(handler, **options): the handler (and LocalLambda options) the "
        "local_lambda fixture runs",
    )
    config.addinivalue_line(
        "markers",
        "lambda_context(timeout_s=3, memory_mb=128, function_name=...): the lambda_context "
        "fixture's settings",
    )
    enabled = config.getoption("lambda_conn")
    if enabled is None:
        enabled = bool(config.getini("lambda_conn"))
    if not enabled:
        return  # inactive: no per-test hook at all
    on_leak = config.getoption("lambda_conn_on_leak") or config.getini("lambda_conn_on_leak")
    if on_leak not in ON_LEAK:
        raise pytest.UsageError(
            f"lambda_conn_on_leak = {on_leak!r} is not accepted: expected raise or report"
        )
    config.pluginmanager.register(LeakCheck(str(on_leak)), "lambda_conn_leak_check")


def pytest_report_header(config: pytest.Config) -> str | None:
    check = config.pluginmanager.get_plugin("lambda_conn_leak_check")
    if check is None:
        return None
    return f"lambda-conn: every test in a scope, on_leak={check.on_leak}"


class LeakCheck:
    """Registered only when enabled: wraps each test's call phase in a tracking scope."""

    def __init__(self, on_leak: str) -> None:
        from lambda_conn import _tracking

        _tracking.install()  # clients imported from now on (or before) are tracked
        self.on_leak = on_leak

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, object, object]:
        __tracebackhide__ = True  # the failure is the test's leak, not this hook
        if item.get_closest_marker(EXEMPT) is not None:
            return (yield)
        from lambda_conn._errors import LeakError

        scope = _test_scope(self.on_leak)
        try:
            result = yield
        except BaseException:
            scope.exit(failed=True)  # the test's own failure stands; still close everything
            raise
        left = _left_open(scope)
        scope.exit()  # closes them; raises LeakError if one cannot be closed (on_leak=raise)
        if left:
            message = (
                f"{item.nodeid} left {len(left)} connection(s) open: {left}; lambda-conn "
                f"closed them. To fix: {_HINT}"
            )
            if self.on_leak == "raise":
                raise LeakError(message)
            item.warn(LeakWarning(message))
        return result


def _test_scope(on_leak: str) -> Any:
    """A scope that tracks every client but is not an invocation: its root is closed from
    the start, so a handler the test calls is the outermost invocation (counters, health
    guard, per-invocation state of reused connections), exactly as on Lambda."""
    from lambda_conn._scope import Scope

    outside = Scope()
    outside.closed = True
    scope = Scope(None, on_leak)
    scope.root = outside
    return scope.enter()


def _left_open(scope: Any) -> list[dict[str, object]]:
    from lambda_conn._scope import _remote, _still_open

    return [
        {"kind": kind.name, "remote": _remote(obj, kind)}
        for obj, kind in scope._resources.values()
        if _still_open(obj, kind)
    ]


class FakeLambdaContext:
    """What awslambdaric passes as ``context``, with a deadline that runs in real time."""

    def __init__(
        self,
        *,
        function_name: str = "test-function",
        timeout_s: float = 3.0,
        memory_mb: int = 128,
        region: str = "us-east-1",
        account: str = "123456789012",
    ) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account}:function:{function_name}"
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"{time.strftime('%Y/%m/%d')}/[$LATEST]{uuid.uuid4().hex}"
        self.identity = None
        self.client_context = None
        self.tenant_id = None
        self.timeout_s = timeout_s
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def __repr__(self) -> str:
        return (
            f"FakeLambdaContext(function_name={self.function_name!r}, "
            f"remaining_ms={self.get_remaining_time_in_millis()})"
        )


@pytest.fixture
def lambda_context(request: pytest.FixtureRequest) -> FakeLambdaContext:
    """A fresh context per test; ``@pytest.mark.lambda_context(timeout_s=..., ...)`` sets it."""
    marker = request.node.get_closest_marker("lambda_context")
    return FakeLambdaContext(**(marker.kwargs if marker else {}))


@pytest.fixture
def local_lambda(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The test's handler in a Lambda-faithful local runtime, closed after the test."""
    from lambda_conn.local import LocalLambda

    config = request.config
    marker = request.node.get_closest_marker("local_lambda")
    options: dict[str, Any] = dict(marker.kwargs) if marker else {}
    handler = marker.args[0] if marker and marker.args else config.getini("lambda_conn_handler")
    if not handler:
        raise pytest.UsageError(
            "the local_lambda fixture needs a handler: @pytest.mark.local_lambda('app.handler') "
            "or lambda_conn_handler = app.handler in the ini file"
        )
    handler_dir = options.pop("handler_dir", None) or config.getini("lambda_conn_handler_dir")
    options["handler_dir"] = Path(config.rootpath, handler_dir or ".")
    fn = LocalLambda(str(handler), **options)
    try:
        yield fn
    finally:
        fn.close()
