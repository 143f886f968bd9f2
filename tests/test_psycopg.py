"""psycopg 3 under @managed_connection, proved on the server side of a private PostgreSQL.

The server logs every session's end (``log_disconnections``) and logs "unexpected EOF on
client connection" when a client inside a transaction vanished without the Terminate
message: the PostgreSQL counterpart of MariaDB's Aborted_clients.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool, ConnectionPool, NullConnectionPool

from lambda_conn import managed_connection, register
from tests.servers.fds import open_fds


def leak_events(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "lambda_conn"]
    return [r for r in records if r["event"] == "connections_leaked"]


def test_connection_closed_with_terminate_when_handler_returns(postgres: Any) -> None:
    kept: list[Any] = []
    before = postgres.session_ids()
    unclean = postgres.unclean_mark()

    @managed_connection(on_leak="raise")
    def handler(event: object, context: object) -> int:
        conn = psycopg.connect(**postgres.connect_kwargs())
        kept.append(conn)  # a reference that would keep it open forever
        # psycopg opens a transaction on the first query: the session is "idle in
        # transaction" when the handler returns
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert pid is not None
        return int(pid[0])

    fds = open_fds()
    pid = handler({}, None)
    assert open_fds() == fds
    assert kept[0].closed and not kept[0].broken  # closed, not lost
    assert postgres.wait_new_sessions_gone(before) == []
    assert pid not in postgres.session_ids()
    # Terminate was sent: the backend did not see an unexpected EOF mid-transaction
    assert postgres.unclean_closes_since(unclean) == 0


def test_uncommitted_work_is_rolled_back_by_the_server(postgres: Any) -> None:
    before_ids = postgres.session_ids(user=None)
    table = "lc_rollback"
    postgres.query(f"CREATE TABLE IF NOT EXISTS {table} (n int)")
    postgres.query(f"GRANT ALL ON {table} TO lc")
    postgres.query(f"TRUNCATE {table}")

    @managed_connection
    def handler(event: object, context: object) -> None:
        conn = psycopg.connect(**postgres.connect_kwargs())
        conn.execute(f"INSERT INTO {table} VALUES (1)")  # never committed

    handler({}, None)
    assert postgres.wait_new_sessions_gone(before_ids) == []
    assert postgres.query(f"SELECT count(*) FROM {table}") == [(0,)]


def test_connection_closed_when_handler_raises(postgres: Any) -> None:
    before = postgres.session_ids()
    error = LookupError("handler failed")

    @managed_connection
    def handler(event: object, context: object) -> None:
        conn = psycopg.connect(**postgres.connect_kwargs())
        conn.execute("SELECT 1")
        raise error

    fds = open_fds()
    with pytest.raises(LookupError) as info:
        handler({}, None)
    assert info.value is error
    assert open_fds() == fds
    assert postgres.wait_new_sessions_gone(before) == []


def test_query_error_leaves_no_session(postgres: Any) -> None:
    before_ids = postgres.session_ids(user=None)

    @managed_connection
    def handler(event: object, context: object) -> None:
        conn = psycopg.connect(**postgres.connect_kwargs())
        conn.execute("SELECT * FROM no_such_table")

    fds = open_fds()
    with pytest.raises(psycopg.errors.UndefinedTable):
        handler({}, None)
    assert open_fds() == fds
    assert postgres.wait_new_sessions_gone(before_ids) == []


def test_connection_used_as_context_manager_is_not_closed_twice(
    postgres: Any, caplog: pytest.LogCaptureFixture
) -> None:
    before_ids = postgres.session_ids(user=None)

    @managed_connection(on_leak="raise")
    def handler(event: object, context: object) -> int:
        with psycopg.connect(**postgres.connect_kwargs()) as conn:
            row = conn.execute("SELECT 41 + 1").fetchone()
        assert row is not None
        return int(row[0])

    with caplog.at_level(logging.WARNING, logger="lambda_conn"):
        assert handler({}, None) == 42
    assert not caplog.records
    assert postgres.wait_new_sessions_gone(before_ids) == []


def test_async_connection_closed_in_async_handler(postgres: Any) -> None:
    before_ids = postgres.session_ids(user=None)
    kept: list[Any] = []
    unclean = postgres.unclean_mark()

    @managed_connection(on_leak="raise")
    async def handler(event: object, context: object) -> int:
        conn = await psycopg.AsyncConnection.connect(**postgres.connect_kwargs())
        kept.append(conn)
        cur = await conn.execute("SELECT 1")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    fds = open_fds()
    assert asyncio.run(handler({}, None)) == 1
    assert open_fds() == fds
    assert kept[0].closed
    assert postgres.wait_new_sessions_gone(before_ids) == []
    assert postgres.unclean_closes_since(unclean) == 0


def test_async_connection_left_by_a_sync_handler_is_finished(postgres: Any) -> None:
    """asyncio.run() inside a sync handler: its loop is gone when the scope closes, so the
    connection is finished synchronously (libpq's PQfinish needs no loop)."""
    before_ids = postgres.session_ids(user=None)
    kept: list[Any] = []

    async def query() -> None:
        conn = await psycopg.AsyncConnection.connect(**postgres.connect_kwargs())
        kept.append(conn)
        await conn.execute("SELECT 1")

    @managed_connection(on_leak="raise")
    def handler(event: object, context: object) -> None:
        asyncio.run(query())

    fds = open_fds()
    handler({}, None)
    assert open_fds() == fds
    assert kept[0].closed and not kept[0].broken
    assert postgres.wait_new_sessions_gone(before_ids) == []


def test_backend_terminated_mid_invocation(postgres: Any) -> None:
    before_ids = postgres.session_ids(user=None)

    @managed_connection(on_leak="raise")
    def handler(event: object, context: object) -> None:
        conn = psycopg.connect(**postgres.connect_kwargs())
        pid = conn.info.backend_pid
        assert postgres.terminate(pid)
        postgres.wait_session_gone(pid)  # let the terminate land
        conn.execute("SELECT 1")  # the server has gone away under us

    fds = open_fds()
    with pytest.raises(psycopg.OperationalError):
        handler({}, None)
    assert open_fds() == fds
    assert postgres.wait_new_sessions_gone(before_ids) == []


def test_server_down_connection_refused_leaks_nothing(make_postgres: Any) -> None:
    server = make_postgres()
    kwargs = server.connect_kwargs(connect_timeout=2)
    server.stop()

    @managed_connection
    def handler(event: object, context: object) -> None:
        psycopg.connect(**kwargs)

    fds = open_fds()
    with pytest.raises(psycopg.OperationalError):
        handler({}, None)
    assert open_fds() == fds


@pytest.mark.parametrize("connect", ["psycopg.connect", "Connection.connect", "async"])
def test_timed_out_connect_frees_its_socket_without_gc(silent_server: Any, connect: str) -> None:
    """psycopg's failed connect() leaves its socket in a reference cycle (error <-> frame);
    lambda_conn breaks it, so the server sees the close with the cyclic GC off."""
    kwargs = {
        "host": "127.0.0.1",
        "port": silent_server.port,
        "user": "x",
        "connect_timeout": 1,
        "sslmode": "disable",
    }

    async def aconnect() -> None:
        await psycopg.AsyncConnection.connect(**kwargs)

    @managed_connection
    def handler(event: object, context: object) -> None:
        if connect == "psycopg.connect":
            psycopg.connect(**kwargs)
        elif connect == "Connection.connect":
            psycopg.Connection.connect(**kwargs)
        else:
            asyncio.run(aconnect())

    if connect == "async":
        asyncio.run(asyncio.sleep(0))  # the loop's own first-use descriptors, once
    fds = open_fds()
    started = time.monotonic()
    gc.disable()
    try:
        with pytest.raises(psycopg.errors.ConnectionTimeout):
            handler({}, None)
        assert time.monotonic() - started < 10
        assert silent_server.wait_open(0) == 0  # first: its accepted socket is ours too
        assert open_fds() == fds
    finally:
        gc.enable()


def test_too_many_connections_closes_the_ones_that_did_open(make_postgres: Any) -> None:
    # 5 slots, 1 taken by the fixture's admin: lc gets 4
    server = make_postgres(max_connections=5, superuser_reserved_connections=0)
    opened: list[Any] = []

    @managed_connection
    def handler(event: object, context: object) -> None:
        for _ in range(10):
            opened.append(psycopg.connect(**server.connect_kwargs()))

    fds = open_fds()
    with pytest.raises(psycopg.OperationalError, match="too many clients"):
        handler({}, None)
    assert len(opened) == 4
    assert open_fds() == fds
    assert server.wait_for_sessions(0) == 0
    assert all(conn.closed for conn in opened)


def test_register_and_untracked_scope_options(postgres: Any) -> None:
    """clients=... leaves other clients alone; register() closes what tracking skipped."""
    before_ids = postgres.session_ids(user=None)
    kept: list[Any] = []

    @managed_connection(clients=["pymysql"])
    def handler(event: object, context: object) -> None:
        kept.append(psycopg.connect(**postgres.connect_kwargs()))  # not tracked here
        kept.append(register(psycopg.connect(**postgres.connect_kwargs())))

    handler({}, None)
    try:
        assert not kept[0].closed
        assert kept[1].closed
        assert len(postgres.wait_new_sessions(before_ids, 1)) == 1
    finally:
        kept[0].close()
    assert postgres.wait_new_sessions_gone(before_ids) == []


def test_with_managed_connection_closes_one_connection(postgres: Any) -> None:
    before_ids = postgres.session_ids(user=None)
    conn = psycopg.connect(**postgres.connect_kwargs())  # opened outside any scope
    with managed_connection(conn) as same:
        assert same is conn
        same.execute("SELECT 1")
    assert conn.closed
    assert postgres.wait_new_sessions_gone(before_ids) == []


def test_leak_report_names_the_server(postgres: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A close that fails and leaves the socket open is reported with host:port."""
    before_ids = postgres.session_ids(user=None)

    class Unfinishable:
        """A libpq connection whose PQfinish does nothing."""

        def __init__(self, pgconn: Any) -> None:
            self.real = pgconn

        def finish(self) -> None:
            pass

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

    kept: list[Any] = []

    @managed_connection
    def handler(event: object, context: object) -> None:
        conn = psycopg.connect(**postgres.connect_kwargs())
        conn.execute("SELECT 1")
        conn.pgconn = Unfinishable(conn.pgconn)
        kept.append(conn)

    with caplog.at_level(logging.WARNING, logger="lambda_conn"):
        handler({}, None)
    try:
        (event,) = leak_events(caplog)
        assert event["connections"] == [
            {"kind": "psycopg.Connection", "remote": [f"127.0.0.1:{postgres.port}"]}
        ]
    finally:
        kept[0].pgconn = kept[0].pgconn.real
        kept[0].close()
    assert postgres.wait_new_sessions_gone(before_ids) == []


# ----------------------------------------------------------------------------- pools


def test_module_level_pool_keeps_its_connections_across_invocations(postgres: Any) -> None:
    before_ids = postgres.session_ids(user=None)
    pool = ConnectionPool(postgres.conninfo(), min_size=1, max_size=1, open=True)
    try:
        pool.wait()

        @managed_connection(on_leak="raise")
        def handler(event: object, context: object) -> int:
            with pool.connection() as conn:
                row = conn.execute("SELECT pg_backend_pid()").fetchone()
            assert row is not None
            return int(row[0])

        first = handler({}, None)
        second = handler({}, None)
        assert first == second  # the same pooled session served both invocations
        assert len(postgres.wait_new_sessions(before_ids, 1)) == 1
    finally:
        pool.close()
    assert postgres.wait_new_sessions_gone(before_ids) == []


def test_module_level_null_pool_connection_is_the_pools(postgres: Any) -> None:
    """NullConnectionPool connects in the caller's thread: inside the handler's scope. The
    connection is still the pool's, which closes it on return; the scope does not."""
    before_ids = postgres.session_ids(user=None)
    pool = NullConnectionPool(postgres.conninfo(), open=True)
    try:

        @managed_connection(on_leak="raise")
        def handler(event: object, context: object) -> int:
            with pool.connection() as conn:
                conn.execute("SELECT 1")
            # still inside the scope: the pool closed it, on return
            return len(postgres.wait_new_sessions_gone(before_ids))

        assert handler({}, None) == 0
    finally:
        pool.close()


def test_pool_created_in_the_handler_is_closed_with_checked_out_connections(
    postgres: Any,
) -> None:
    before_ids = postgres.session_ids(user=None)
    pools: list[Any] = []
    held: list[Any] = []
    unclean = postgres.unclean_mark()

    @managed_connection(on_leak="raise")
    def handler(event: object, context: object) -> int:
        pool = ConnectionPool(postgres.conninfo(), min_size=2, open=True)
        pools.append(pool)
        pool.wait()
        conn = pool.getconn()  # never returned: pool.close() alone would leave it open
        held.append(conn)  # and kept: else garbage collection ends it (with a Terminate)
        conn.execute("SELECT 1")
        return len(postgres.new_sessions(before_ids))

    fds = open_fds()
    assert handler({}, None) == 2
    assert pools[0].closed
    assert held[0].closed
    assert open_fds() == fds
    assert postgres.wait_new_sessions_gone(before_ids) == []
    assert postgres.unclean_closes_since(unclean) == 0


def test_async_pool_created_in_the_handler_is_closed(postgres: Any) -> None:
    before_ids = postgres.session_ids(user=None)
    pools: list[Any] = []

    @managed_connection(on_leak="raise")
    async def handler(event: object, context: object) -> int:
        pool = AsyncConnectionPool(postgres.conninfo(), min_size=2, open=False)
        await pool.open(wait=True)
        pools.append(pool)
        conn = await pool.getconn()  # never returned
        await conn.execute("SELECT 1")
        return len(postgres.new_sessions(before_ids))

    fds = open_fds()
    assert asyncio.run(handler({}, None)) == 2
    assert pools[0].closed
    assert open_fds() == fds
    assert postgres.wait_new_sessions_gone(before_ids) == []


def test_many_invocations_leave_nothing_behind(postgres: Any) -> None:
    before_ids = postgres.session_ids(user=None)

    @managed_connection(on_leak="raise")
    def handler(event: object, context: object) -> None:
        for _ in range(3):
            psycopg.connect(**postgres.connect_kwargs()).execute("SELECT 1")

    fds = open_fds()
    disconnections = postgres.disconnections()
    for _ in range(50):
        handler({}, None)
    assert open_fds() == fds
    assert postgres.wait_new_sessions_gone(before_ids) == []
    deadline = time.monotonic() + 5
    while postgres.disconnections() < disconnections + 150 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert postgres.disconnections() == disconnections + 150


# ----------------------------------------------------------------------------- examples


def load_example(name: str, monkeypatch: pytest.MonkeyPatch, postgres: Any) -> Any:
    """Import examples/<name>.py as the docs show it, with DATABASE_URL set."""
    import importlib.util
    from pathlib import Path

    monkeypatch.setenv("DATABASE_URL", postgres.conninfo())
    path = Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_psycopg_handler(postgres: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    before_ids = postgres.session_ids(user=None)
    example = load_example("psycopg_handler", monkeypatch, postgres)
    result = example.handler({}, None)
    assert result["database"] == "lc"
    assert postgres.wait_new_sessions_gone(before_ids) == []


def test_example_rds_proxy_reuse(postgres: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    before_ids = postgres.session_ids(user=None)
    example = load_example("rds_proxy_reuse", monkeypatch, postgres)
    try:
        first = example.handler({}, None)
        second = example.handler({}, None)
        assert first == second  # one kept connection, not swept by the scope
        assert len(postgres.wait_new_sessions(before_ids, 1)) == 1
        # the proxy (here: the server) closed it while the environment was frozen
        assert postgres.terminate(first["backend_pid"])
        assert postgres.wait_new_sessions_gone(before_ids) == []
        third = example.handler({}, None)  # validated, found dead, reopened
        assert third != first
        assert example.db.reconnects == 1
    finally:
        example.db.close()
    assert postgres.wait_new_sessions_gone(before_ids) == []


def test_reused_psycopg_connection_survives_a_server_side_terminate(postgres: Any) -> None:
    import time

    from lambda_conn import managed_connection as managed
    from lambda_conn import reused_connection

    db = reused_connection(lambda: psycopg.connect(**postgres.connect_kwargs(), autocommit=True))

    @managed
    def handler(event: object, context: object) -> int:
        row = db().execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        return int(row[0])

    try:
        first = handler({}, None)
        assert postgres.terminate(first)  # a proxy or the server ended it while we were frozen
        time.sleep(0.1)
        second = handler({}, None)  # no error reaches the handler
        assert second != first
        assert db.reconnects == 1
    finally:
        db.close()
