"""Every handler shape is covered or refused, proven on the server's side.

Covered: ``def``, ``async def``, a sync function that returns a coroutine (with or without
``functools.wraps``), and an ``async def`` given straight to awslambdaric. Refused at
decoration: generator and async generator functions, whose body would run after the scope
closed. A sync handler that returns a generator object is reported once.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from lambda_conn import managed_connection
from lambda_conn.local import LocalLambda


def connect(mariadb: Any) -> pymysql.connections.Connection:
    return pymysql.connect(**mariadb.connect_kwargs())


def session_of(conn: pymysql.connections.Connection) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID()")
        return int(cur.fetchone()[0])


# -- refused at decoration -------------------------------------------------------------


def test_a_generator_function_is_refused_with_what_to_do() -> None:
    def rows(event: object, context: object) -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError, match="generator function") as info:
        managed_connection(rows)
    assert "rows" in str(info.value) and "with managed_connection():" in str(info.value)


def test_an_async_generator_function_is_refused_with_what_to_do() -> None:
    async def rows(event: object, context: object) -> AsyncIterator[int]:
        yield 1

    with pytest.raises(TypeError, match="async generator function") as info:
        managed_connection(clients=["pymysql"])(rows)
    assert "async for" in str(info.value)


def test_a_generator_method_on_a_callable_object_is_refused() -> None:
    class Handler:
        def __call__(self, event: object, context: object) -> Iterator[int]:
            yield 1

    with pytest.raises(TypeError, match="generator function"):
        managed_connection(Handler())


# -- sync callables that return an awaitable get the async path -----------------------


def returns_coroutine(mariadb: Any, kept: list[Any]) -> Callable[..., Awaitable[int]]:
    async def main(event: object) -> int:
        await asyncio.sleep(0)
        conn = connect(mariadb)  # opened by the coroutine's body, after the sync call
        kept.append(conn)  # and still referenced: only the scope can close it
        return session_of(conn)

    return main


def test_a_sync_function_returning_a_coroutine_is_covered_until_it_completes(
    mariadb: Any,
) -> None:
    kept: list[Any] = []
    main = returns_coroutine(mariadb, kept)

    @managed_connection
    def handler(event: object, context: object) -> Awaitable[int]:
        return main(event)

    session = asyncio.run(handler({}, None))  # type: ignore[arg-type]
    assert not kept[0].open
    assert mariadb.wait_session_gone(session)


def test_a_wraps_wrapper_around_an_async_def_is_covered(mariadb: Any) -> None:
    kept: list[Any] = []
    main = returns_coroutine(mariadb, kept)

    def logged(fn: Callable[..., Awaitable[int]]) -> Callable[..., Awaitable[int]]:
        @functools.wraps(fn)
        def wrapper(*args: Any) -> Awaitable[int]:  # sync, returns fn's coroutine
            return fn(*args)

        return wrapper

    handler = managed_connection(logged(main))

    async def caller() -> int:
        return await handler({})

    session = asyncio.run(caller())
    assert not kept[0].open
    assert mariadb.wait_session_gone(session)


def test_a_handed_over_scope_also_closes_when_the_coroutine_raises(mariadb: Any) -> None:
    kept: list[Any] = []

    async def main() -> None:
        kept.append(connect(mariadb))
        raise ValueError("boom")

    handler = managed_connection(lambda: main())
    with pytest.raises(ValueError, match="boom"):
        asyncio.run(handler())
    assert not kept[0].open


def test_a_sync_handler_returning_a_generator_is_reported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def rows() -> Iterator[int]:
        yield 1

    @managed_connection
    def handler(event: object, context: object) -> Iterator[int]:
        return rows()

    with caplog.at_level(logging.WARNING, logger="lambda_conn"):
        for _ in range(3):
            assert list(handler({}, None)) == [1]
    events = [json.loads(r.getMessage()) for r in caplog.records if r.name == "lambda_conn"]
    reports = [e for e in events if e["event"] == "handler_returned_generator"]
    assert len(reports) == 1 and reports[0]["handler"].endswith("handler")


# -- an async def given straight to awslambdaric --------------------------------------

ASYNC_ENTRY = """
    import asyncio
    import functools
    import os

    import pymysql
    from lambda_conn import managed_connection

    kept = []  # every connection stays referenced: only the scope closes them

    def connect():
        conn = pymysql.connect(
            host="127.0.0.1",
            port=int(os.environ["DB_PORT"]),
            user=os.environ["DB_USER"],
            password=os.environ["DB_PASSWORD"],
            database=os.environ["DB_NAME"],
            ssl_disabled=True,
        )
        kept.append(conn)
        return conn

    async def query(event):
        await asyncio.sleep(0)
        if event.get("fail"):
            connect()
            raise ValueError("failed on purpose")
        with connect().cursor() as cur:
            cur.execute("SELECT CONNECTION_ID()")
            session = cur.fetchone()[0]
        return {
            "session": session,
            "open_before": sum(c.open for c in kept[:-1]),
            "loop": id(asyncio.get_running_loop()),
        }

    @managed_connection
    async def handler(event, context):
        return await query(event)

    def logged(fn):
        @functools.wraps(fn)
        def wrapper(event, context):
            return fn(event, context)
        return wrapper

    @managed_connection
    @logged
    async def wrapped(event, context):
        return await query(event)
"""


@pytest.fixture
def async_entry(tmp_path: Path, mariadb: Any) -> Iterator[Callable[[str], LocalLambda]]:
    (tmp_path / "app.py").write_text(textwrap.dedent(ASYNC_ENTRY))
    kwargs = mariadb.connect_kwargs()
    env = {
        "DB_PORT": str(kwargs["port"]),
        "DB_USER": kwargs["user"],
        "DB_PASSWORD": kwargs["password"],
        "DB_NAME": kwargs["database"],
    }
    made: list[LocalLambda] = []

    def make(handler: str) -> LocalLambda:
        made.append(LocalLambda(handler, handler_dir=tmp_path, env=env, timeout_s=10.0))
        return made[-1]

    yield make
    for fn in made:
        fn.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("entry", ["app.handler", "app.wrapped"])
def test_an_async_handler_runs_as_the_lambda_entry_point(
    async_entry: Callable[[str], LocalLambda], mariadb: Any, entry: str
) -> None:
    # GIVEN an async handler (or a sync wrapper around one) that awslambdaric calls itself
    fn = async_entry(entry)
    # WHEN it is invoked three times
    records = [fn.invoke({}) for _ in range(3)]
    # THEN each invocation answers (no Runtime.MarshalError), on one loop kept between them
    assert [r.outcome for r in records] == ["ok"] * 3, records[0].response
    assert len({r.response["loop"] for r in records}) == 1
    # AND each invocation's connection was closed at its end although still referenced
    assert [r.response["open_before"] for r in records] == [0, 0, 0]
    assert all(mariadb.wait_session_gone(r.response["session"]) for r in records)
    # AND its exception is the invocation's error, its connection closed all the same
    before = mariadb.session_ids(user=None)  # any user's, as Threads_connected counts
    failed = fn.invoke({"fail": True})
    assert failed.outcome == "function_error"
    assert failed.response["errorType"] == "ValueError"
    assert failed.response["errorMessage"] == "failed on purpose"
    assert mariadb.wait_new_sessions_gone(before, user=None) == []
