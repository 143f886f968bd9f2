"""@managed_connection semantics that need no server: explicit resources, options, shape."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import sys
import threading
import traceback

import pytest

import lambda_conn
from lambda_conn import ConfigurationError, LeakError, managed_connection, register


class Resource:
    """Anything with close(): what users register explicitly."""

    def __init__(self, log: list[str], name: str, fail: bool = False) -> None:
        self.log, self.name, self.fail = log, name, fail
        self.closed = False

    def close(self) -> None:
        self.log.append(self.name)
        if self.fail:
            raise OSError(f"close of {self.name} failed")
        self.closed = True


class AsyncResource:
    def __init__(self) -> None:
        self.is_closed = False

    async def aclose(self) -> None:
        await asyncio.sleep(0)
        self.is_closed = True


def test_registered_resources_close_newest_first_on_return() -> None:
    log: list[str] = []

    @managed_connection
    def handler(event: dict[str, int], context: object) -> int:
        for name in "abc":
            register(Resource(log, name))
        return event["x"] * 2

    assert handler({"x": 21}, None) == 42
    assert log == ["c", "b", "a"]


def test_handler_exception_reaches_caller_unchanged_after_cleanup() -> None:
    log: list[str] = []
    raised = ValueError("boom")

    @managed_connection
    def handler(event: object, context: object) -> None:
        register(Resource(log, "db"))
        raise raised

    with pytest.raises(ValueError) as info:
        handler({}, None)
    assert info.value is raised
    assert log == ["db"]
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert frames[-1] == "handler"  # the handler's own frame is still on the traceback


def test_close_that_raises_is_logged_and_does_not_stop_other_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: list[str] = []

    @managed_connection
    def handler(event: object, context: object) -> str:
        register(Resource(log, "first"))
        register(Resource(log, "broken", fail=True))
        register(Resource(log, "last"))
        return "result"

    with caplog.at_level(logging.WARNING, logger="lambda_conn"):
        assert handler({}, None) == "result"
    assert log == ["last", "broken", "first"]
    events = [json.loads(r.getMessage()) for r in caplog.records]
    failed = [e for e in events if e["event"] == "close_failed"]
    assert failed and failed[0]["error"] == "OSError"
    # the broken one is still open: reported as leaked
    assert any(e["event"] == "connections_leaked" and e["count"] == 1 for e in events)


def test_close_that_raises_never_replaces_the_handlers_exception() -> None:
    log: list[str] = []

    @managed_connection
    def handler(event: object, context: object) -> None:
        register(Resource(log, "broken", fail=True))
        raise KeyError("original")

    with pytest.raises(KeyError, match="original"):
        handler({}, None)


def test_on_leak_raise_after_success_but_not_over_a_handler_error() -> None:
    @managed_connection(on_leak="raise")
    def ok(event: object, context: object) -> None:
        register(Resource([], "broken", fail=True))

    @managed_connection(on_leak="raise")
    def failing(event: object, context: object) -> None:
        register(Resource([], "broken", fail=True))
        raise RuntimeError("handler")

    with pytest.raises(LeakError):
        ok({}, None)
    with pytest.raises(RuntimeError, match="handler"):
        failing({}, None)


def test_leak_counter_counts_what_stayed_open() -> None:
    before = lambda_conn.stats()["leaked"]

    @managed_connection(on_leak="ignore")
    def handler(event: object, context: object) -> None:
        register(Resource([], "x", fail=True))
        register(Resource([], "y"))

    handler({}, None)
    assert lambda_conn.stats()["leaked"] == before + 1


def test_nested_scopes_close_only_their_own() -> None:
    log: list[str] = []

    @managed_connection
    def inner() -> None:
        register(Resource(log, "inner"))

    @managed_connection
    def outer(event: object, context: object) -> None:
        register(Resource(log, "outer"))
        inner()
        log.append("after-inner")

    outer({}, None)
    assert log == ["inner", "after-inner", "outer"]


def test_only_the_outermost_decorated_call_counts_as_an_invocation() -> None:
    import contextvars

    from lambda_conn._scope import in_invocation

    @managed_connection
    def inner() -> int:
        return 1

    seen: list[bool] = []

    @managed_connection
    def outer(event: object, context: object) -> int:
        with managed_connection():
            copied = contextvars.copy_context()  # a thread's copy, say
        # from a context copied inside a block that has ended no scope is open, even
        # though the invocation still is: a decorated call there is its own invocation
        seen.append(copied.run(in_invocation))
        return inner() + inner() + copied.run(inner)

    before = lambda_conn.stats()["invocations"]
    # GIVEN a handler that calls decorated functions: one invocation, plus the stray one
    assert outer({}, None) == 3
    assert seen == [False]
    assert lambda_conn.stats()["invocations"] == before + 2
    # a decorated function called on its own is an invocation
    assert inner() == 1
    assert lambda_conn.stats()["invocations"] == before + 3


def _raises(event: object, context: object) -> None:
    raise ValueError("the handler's own error")


@pytest.mark.parametrize("shape", ["sync", "async", "raises", "block"])
def test_an_invocation_leaves_no_cyclic_garbage(shape: str) -> None:
    """A scope that referred to itself (its root) was a cycle per invocation: freed only
    by the cyclic collector, whose runs it triggered, each walking the whole heap (a
    handler module with boto3 loaded has ~60,000 objects)."""
    import gc

    @managed_connection
    def sync(event: object, context: object) -> int:
        register(Resource([], "r"))
        return 1

    @managed_connection
    async def asynchronous(event: object, context: object) -> int:
        return 1

    raises = managed_connection(_raises)
    block = managed_connection()
    loop = asyncio.new_event_loop()

    def invoke() -> None:
        if shape == "sync":
            sync({}, None)
        elif shape == "async":
            loop.run_until_complete(asynchronous({}, None))
        elif shape == "raises":
            with pytest.raises(ValueError):
                raises({}, None)
        else:
            with block as scope:
                scope.register(Resource([], "r"))

    try:
        invoke()  # first calls may create what lives on (caches)
        gc.collect()
        gc.disable()
        for _ in range(50):
            invoke()
        assert gc.collect() == 0  # nothing the invocations made needed the collector
    finally:
        gc.enable()
        loop.close()


def test_scope_as_context_manager() -> None:
    log: list[str] = []
    with managed_connection() as scope:
        scope.register(Resource(log, "a"))
        assert lambda_conn.current_scope() is scope
    assert log == ["a"]
    assert lambda_conn.current_scope() is None


def test_closing_one_object_and_closing_twice_is_not_an_error() -> None:
    log: list[str] = []
    res = Resource(log, "conn")
    with managed_connection(res) as got:
        assert got is res
    assert res.closed
    with managed_connection(res):
        pass  # already closed: generic close sees .closed and does nothing
    assert log == ["conn"]


def test_async_handler_awaits_aclose_and_keeps_coroutine_nature() -> None:
    res = AsyncResource()

    @managed_connection
    async def handler(event: object, context: object) -> str:
        register(res)
        await asyncio.sleep(0)
        return "done"

    assert inspect.iscoroutinefunction(handler)
    assert asyncio.run(handler({}, None)) == "done"
    assert res.is_closed


def test_async_with_single_object() -> None:
    res = AsyncResource()

    async def main() -> None:
        async with managed_connection(res) as got:
            assert got is res

    asyncio.run(main())
    assert res.is_closed


def test_signature_name_and_doc_are_kept_and_methods_work() -> None:
    def handler(event: dict[str, str], context: object, *, extra: int = 1) -> str:
        """Doc."""
        return "ok"

    wrapped = managed_connection(handler)
    assert inspect.signature(wrapped) == inspect.signature(handler)
    assert wrapped.__name__ == "handler" and wrapped.__doc__ == "Doc."
    assert not inspect.iscoroutinefunction(wrapped)

    class Service:
        def __init__(self) -> None:
            self.log: list[str] = []

        @managed_connection
        def handle(self, event: object, context: object) -> int:
            register(Resource(self.log, "m"))
            return 7

    service = Service()
    assert service.handle({}, None) == 7
    assert service.log == ["m"]


def test_scopes_are_isolated_between_threads() -> None:
    seen: dict[str, object] = {}
    barrier = threading.Barrier(2)

    @managed_connection
    def handler(name: str) -> None:
        seen[name] = lambda_conn.current_scope()
        barrier.wait(timeout=5)
        register(Resource([], name))
        barrier.wait(timeout=5)
        assert len(lambda_conn.current_scope() or ()) == 1  # only its own resource

    threads = [threading.Thread(target=handler, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert seen["a"] is not seen["b"]


def test_scopes_are_isolated_between_tasks() -> None:
    @managed_connection
    async def handler(name: str) -> int:
        register(AsyncResource())
        await asyncio.sleep(0.01)
        return len(lambda_conn.current_scope() or ())

    async def main() -> list[int]:
        return list(await asyncio.gather(*(handler(str(i)) for i in range(5))))

    assert asyncio.run(main()) == [1] * 5


@pytest.mark.parametrize(
    ("options", "named", "accepted"),
    [
        # A word is shown as its type and length: it could be a secret in the wrong place.
        ({"clients": "mysql"}, "clients='mysql'", "pymysql"),
        ({"clients": ["pymysql", "oracle"]}, "clients='oracle'", "sqlalchemy"),
        ({"clients": 3}, "clients=3", '"all"'),
        (
            {"on_leak": "explode"},
            "on_leak='explode'",
            "'report' or 'raise' or 'ignore'",
        ),
    ],
)
def test_bad_options_fail_early_naming_setting_value_and_accepted(
    options: dict[str, object], named: str, accepted: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        managed_connection(**options)  # type: ignore[call-overload]
    message = str(info.value)
    assert message.startswith(f"{named} is not valid: expected ")
    assert accepted in message
    assert info.value.setting == named.split("=")[0]


def test_positional_options_are_refused_with_a_hint() -> None:
    with pytest.raises(TypeError, match="did you mean managed_connection\\(clients='pymysql'\\)"):
        managed_connection("pymysql")  # type: ignore[call-overload]


def test_register_outside_a_scope_says_how_to_fix() -> None:
    with pytest.raises(lambda_conn.LambdaConnError, match="@managed_connection"):
        register(Resource([], "x"))


def test_public_api_matches_all() -> None:
    import types

    defined = {
        name
        for name, value in vars(lambda_conn).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert defined <= set(lambda_conn.__all__), defined - set(lambda_conn.__all__)
    for name in lambda_conn.__all__:
        assert getattr(lambda_conn, name) is not None


def test_import_is_light() -> None:
    import subprocess

    code = (
        "import sys, lambda_conn\n"
        "heavy = ['pymysql', 'sqlalchemy', 'requests', 'httpx', 'urllib3', 'asyncio', "
        "'wrapt', 'inspect', 'ssl', 'dataclasses', 'lambda_conn.local', 'lambda_conn.cli']\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""


def test_one_scope_object_serves_overlapping_tasks() -> None:
    shared = managed_connection()
    resources = [AsyncResource(), AsyncResource()]

    async def task(index: int, delay: float) -> int:
        async with shared as scope:
            scope.register(resources[index])
            await asyncio.sleep(delay)
            return len(scope)

    async def main() -> list[int]:
        return list(await asyncio.gather(task(0, 0.02), task(1, 0.0)))

    assert asyncio.run(main()) == [1, 1]
    assert all(r.is_closed for r in resources)


def test_a_handler_object_with_close_is_decorated_not_closed() -> None:
    class Handler:
        def __init__(self) -> None:
            self.log: list[str] = []

        def __call__(self, event: object, context: object) -> str:
            register(Resource(self.log, "db"))
            return "handled"

        def close(self) -> None:
            raise AssertionError("the handler itself must not be closed")

    handler = Handler()
    wrapped = managed_connection(handler)
    assert wrapped({}, None) == "handled"
    assert handler.log == ["db"]


def test_cancelled_async_close_still_closes_the_rest() -> None:
    class Cancelling:
        is_closed = False

        async def aclose(self) -> None:
            raise asyncio.CancelledError

    later = AsyncResource()

    @managed_connection(on_leak="ignore")
    async def handler(event: object, context: object) -> None:
        register(later)  # closed after the cancelling one (newest first)
        register(Cancelling())

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(handler({}, None))
    assert later.is_closed


def test_credentials_in_a_misplaced_dsn_are_not_echoed() -> None:
    with pytest.raises(TypeError) as info:
        managed_connection("mysql://admin:s3cr3t-pw@db:3306/app")  # type: ignore[call-overload]
    assert "s3cr3t-pw" not in str(info.value)
    with pytest.raises(ConfigurationError) as config_info:
        managed_connection(clients="mysql://admin:s3cr3t-pw@db/app")
    assert "s3cr3t-pw" not in str(config_info.value)
