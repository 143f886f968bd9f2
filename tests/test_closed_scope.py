"""A closed scope takes nothing: a thread or task that outlives its invocation.

A worker started with ``contextvars.copy_context().run`` (as the README recommends), or an
asyncio task created during an invocation, keeps that invocation's context, and with it
the scope, after the invocation has ended. What it opens then must not be kept alive by
the finished scope: proven on the server (by session id, any user), reported and counted.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import queue
import threading
from typing import Any

import pymysql
import pytest

import lambda_conn
from lambda_conn import LambdaConnError, current_scope, managed_connection, register

INVOCATIONS = 10


def late_events(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    events = [json.loads(r.getMessage()) for r in caplog.records if r.name == "lambda_conn"]
    return [e for e in events if e["event"] == "opened_after_scope_closed"]


def open_and_drop(mariadb: Any) -> int:
    """Open a connection, use it, drop it without closing: what the worker does."""
    conn = pymysql.connect(**mariadb.connect_kwargs())
    with conn.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID()")
        (session,) = cur.fetchone()
    return int(session)


def test_a_worker_thread_that_outlives_its_invocation_keeps_nothing_open(
    mariadb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a long-lived worker started from the first invocation with its context copied
    jobs: queue.Queue[int | None] = queue.Queue()
    done: queue.Queue[int] = queue.Queue()

    def worker() -> None:
        while jobs.get() is not None:
            done.put(open_and_drop(mariadb))

    workers: list[threading.Thread] = []

    @managed_connection
    def handler(event: int, context: object) -> int:
        if not workers:
            run = contextvars.copy_context().run
            workers.append(threading.Thread(target=run, args=(worker,), daemon=True))
            workers[0].start()
        jobs.put(event)
        return done.get(timeout=10)

    baseline = mariadb.session_ids(user=None)  # any user's, as Threads_connected counts
    before = lambda_conn.stats()["opened_after_scope_closed"]
    # WHEN ten invocations each have the worker open and drop one connection
    with caplog.at_level(logging.WARNING, logger="lambda_conn"):
        sessions = [handler(i, None) for i in range(INVOCATIONS)]
    jobs.put(None)
    workers[0].join(10)
    # THEN no session opened since is left on the server: the finished scope kept none
    assert len(set(sessions)) == INVOCATIONS
    assert mariadb.wait_new_sessions_gone(baseline, user=None) == []
    # AND the openings after the first invocation's scope closed are counted, reported once
    assert lambda_conn.stats()["opened_after_scope_closed"] == before + INVOCATIONS - 1
    (event,) = late_events(caplog)
    port = mariadb.connect_kwargs()["port"]
    assert event["kind"] == "pymysql.Connection"
    assert event["remote"] == [f"127.0.0.1:{port}"]


def test_an_asyncio_task_that_outlives_its_invocation_keeps_nothing_open(
    mariadb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a task created by the first invocation, running on the loop that outlives it
    loop = asyncio.new_event_loop()
    jobs: asyncio.Queue[int | None] = asyncio.Queue()
    done: asyncio.Queue[int] = asyncio.Queue()
    tasks: list[asyncio.Task[None]] = []

    async def background() -> None:
        while await jobs.get() is not None:
            await done.put(open_and_drop(mariadb))

    @managed_connection
    async def handler(event: int, context: object) -> int:
        if not tasks:
            tasks.append(asyncio.ensure_future(background()))
        await jobs.put(event)
        return await done.get()

    baseline = mariadb.session_ids(user=None)  # any user's, as Threads_connected counts
    before = lambda_conn.stats()["opened_after_scope_closed"]
    try:
        with caplog.at_level(logging.WARNING, logger="lambda_conn"):
            for i in range(INVOCATIONS):
                loop.run_until_complete(handler(i, None))
            loop.run_until_complete(jobs.put(None))
            loop.run_until_complete(tasks[0])
    finally:
        loop.close()
    assert mariadb.wait_new_sessions_gone(baseline, user=None) == []
    assert lambda_conn.stats()["opened_after_scope_closed"] == before + INVOCATIONS - 1
    assert len(late_events(caplog)) == 1


def test_a_closed_scope_is_absent_for_current_scope_and_register() -> None:
    # GIVEN the context of an invocation, copied while it ran
    copied: list[contextvars.Context] = []

    @managed_connection
    def handler(event: object, context: object) -> None:
        copied.append(contextvars.copy_context())

    handler(None, None)
    # THEN, after it ended, that context has no current scope and register() refuses
    assert copied[0].run(current_scope) is None
    with pytest.raises(LambdaConnError, match="after its scope closed"):
        copied[0].run(register, object())


def test_a_scope_object_kept_after_its_block_takes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Resource:
        def __init__(self) -> None:
            self.closes = 0

        def close(self) -> None:
            self.closes += 1

    with managed_connection() as scope:
        pass
    late = Resource()
    with caplog.at_level(logging.WARNING, logger="lambda_conn"):
        assert scope.register(late) is late
    assert len(scope) == 0  # not held: the library keeps nothing alive for it
    assert late.closes == 0
    assert len(late_events(caplog)) == 1


def test_a_pool_connecting_after_the_scope_closed_is_not_reported_as_the_drivers(
    mariadb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a module-level engine (the pool's connections are the pool's), used by a
    # worker thread that copied a finished invocation's context
    import sqlalchemy

    engine = sqlalchemy.create_engine(mariadb.url(), poolclass=sqlalchemy.pool.NullPool)
    copied: list[contextvars.Context] = []

    @managed_connection
    def handler(event: object, context: object) -> None:
        copied.append(contextvars.copy_context())

    handler(None, None)

    def query() -> None:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))

    with caplog.at_level(logging.WARNING, logger="lambda_conn"):
        worker = threading.Thread(target=copied[0].run, args=(query,))
        worker.start()
        worker.join(10)
    # THEN only what the worker itself opened (the Connection) is reported, not the DBAPI
    # connection the pool made for it
    assert [e["kind"] for e in late_events(caplog)] == ["sqlalchemy.Connection"]
    engine.dispose()
