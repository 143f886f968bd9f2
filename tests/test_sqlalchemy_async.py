"""SQLAlchemy's async engines (``create_async_engine`` over asyncpg and aiomysql).

Under the async dialects the pool holds SQLAlchemy's adapter around the driver connection,
and closing anything awaits the driver, which SQLAlchemy allows only inside its greenlet:
a module-level engine must keep its pooled connections (the driver's own tracking saw them
being made), and what a scope owns must be closed through the greenlet, with the driver's
goodbye, not left to SQLAlchemy's error path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from lambda_conn import managed_connection
from tests.servers.fds import open_fds

DIALECTS = [
    pytest.param(("asyncpg", "postgres"), id="asyncpg"),
    pytest.param(("aiomysql", "mariadb"), id="aiomysql"),
]


@pytest.fixture(params=DIALECTS)
def dialect(request: pytest.FixtureRequest) -> Iterator[tuple[str, Any, asyncio.AbstractEventLoop]]:
    driver, server_fixture = request.param
    loop = asyncio.new_event_loop()
    try:
        yield driver, request.getfixturevalue(server_fixture), loop
    finally:
        loop.close()


def _engine(driver: str, server: Any, **options: Any) -> AsyncEngine:
    credentials = f"{quote(server.user, safe='')}:{quote(server.password, safe='')}"
    where = f"{credentials}@{server.host}:{server.port}/{server.database}"
    if driver == "asyncpg":
        return create_async_engine(
            f"postgresql+asyncpg://{where}", connect_args={"ssl": False}, **options
        )
    return create_async_engine(f"mysql+aiomysql://{where}", **options)


async def _session_id(conn: Any, server: Any) -> int:
    return int((await conn.execute(sa.text(server.session_id_sql))).scalar_one())


def _close_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """SQLAlchemy's "Exception closing connection" (MissingGreenlet) and our close_failed."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("sqlalchemy.pool")
        or (r.name == "lambda_conn" and "close_failed" in r.getMessage())
    ]


@pytest.mark.parametrize("clients", ["all", "driver"])
def test_module_level_async_engine_keeps_its_pooled_connection(
    dialect: tuple[str, Any, asyncio.AbstractEventLoop], clients: str
) -> None:
    driver, server, loop = dialect
    engine = _engine(driver, server)  # module level: deliberate reuse across invocations

    @managed_connection(clients="all" if clients == "all" else [driver], on_leak="raise")
    async def handler(event: object, context: object) -> int:
        async with engine.connect() as conn:
            return await _session_id(conn, server)

    try:
        first = loop.run_until_complete(handler({}, None))
        # Before the fix the scope closed the asyncpg/aiomysql connection inside the
        # pool's adapter, and this invocation failed with "connection is closed".
        assert loop.run_until_complete(handler({}, None)) == first
        assert loop.run_until_complete(handler({}, None)) == first
        assert engine.pool.checkedin() == 1
    finally:
        loop.run_until_complete(engine.dispose())


def test_async_engine_built_per_invocation_is_disposed_with_the_drivers_goodbye(
    dialect: tuple[str, Any, asyncio.AbstractEventLoop], caplog: pytest.LogCaptureFixture
) -> None:
    driver, server, loop = dialect
    before = server.session_ids()
    unclean = server.unclean_mark()
    kept: list[Any] = []

    @managed_connection(on_leak="raise")
    async def handler(event: object, context: object) -> int:
        engine = _engine(driver, server)
        kept.append(engine)  # kept: only disposal closes its pool
        async with engine.connect() as conn:
            return await _session_id(conn, server)

    fds = open_fds()
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            loop.run_until_complete(handler({}, None))
            assert open_fds() == fds
    assert server.wait_new_sessions_gone(before) == []
    assert server.unclean_closes_since(unclean) == 0
    assert _close_errors(caplog) == []


def test_async_session_left_in_a_transaction_is_closed(
    dialect: tuple[str, Any, asyncio.AbstractEventLoop], caplog: pytest.LogCaptureFixture
) -> None:
    driver, server, loop = dialect
    before = server.session_ids()
    unclean = server.unclean_mark()
    kept: list[Any] = []

    @managed_connection(on_leak="raise")
    async def handler(event: object, context: object) -> None:
        engine = _engine(driver, server)
        session = AsyncSession(engine)
        kept.append((engine, session))
        await session.execute(sa.text("SELECT 1"))  # a transaction, never committed or closed

    fds = open_fds()
    with caplog.at_level(logging.WARNING):
        loop.run_until_complete(handler({}, None))
    assert open_fds() == fds
    assert server.wait_new_sessions_gone(before) == []
    assert server.unclean_closes_since(unclean) == 0
    assert _close_errors(caplog) == []


def test_connection_a_handler_leaves_checked_out_of_a_module_level_engine_is_invalidated(
    dialect: tuple[str, Any, asyncio.AbstractEventLoop], caplog: pytest.LogCaptureFixture
) -> None:
    driver, server, loop = dialect
    engine = _engine(driver, server)
    kept: list[Any] = []

    @managed_connection
    async def leaky(event: object, context: object) -> int:
        conn = await engine.connect()  # never closed: it would stay checked out forever
        kept.append(conn)
        return await _session_id(conn, server)

    @managed_connection(on_leak="raise")
    async def handler(event: object, context: object) -> int:
        async with engine.connect() as conn:
            return await _session_id(conn, server)

    try:
        with caplog.at_level(logging.WARNING):
            leaked = loop.run_until_complete(leaky({}, None))
            assert engine.pool.checkedout() == 0
            assert server.wait_session_gone(leaked)  # invalidated: its session ended
            assert loop.run_until_complete(handler({}, None)) != leaked  # a fresh one
        assert _close_errors(caplog) == []
    finally:
        loop.run_until_complete(engine.dispose())
