"""The database clients every integration test runs over: how each connects to the suite's
private servers and runs a statement. One row per client; the contract tests
(tests/test_client_contract.py) and the stories (tests/story/) are written once against it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DBClient:
    """One database client. ``connect(server)`` and ``run(conn, sql)`` are coroutine
    functions for async clients; ``run`` returns the rows (or None for a statement)."""

    name: str  # what @managed_connection(clients=[...]) calls it
    server: str  # the fixture of its server: "mariadb" or "postgres"
    connect: Callable[[Any], Any]
    run: Callable[[Any, str], Any]
    is_async: bool = False
    # Runs a query and leaves its result unread (None: the client reads results eagerly).
    start: Callable[[Any, str], Any] | None = None
    label: str = ""  # the test id, where one client has two APIs

    def __str__(self) -> str:
        return self.label or self.name


def _rows(cursor: Any) -> Any:
    return cursor.fetchall() if cursor.description else None


# --------------------------------------------------------------------------- MariaDB


def _mysql_kwargs(server: Any) -> dict[str, Any]:
    return {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "password": server.password,
    }


def _pymysql_connect(server: Any) -> Any:
    import pymysql

    return pymysql.connect(**server.connect_kwargs(connect_timeout=5))


def _cursor_run(conn: Any, sql: str) -> Any:
    cursor = conn.cursor()
    try:
        cursor.execute(sql)
        return _rows(cursor)
    finally:
        cursor.close()


def _cursor_start(conn: Any, sql: str) -> None:
    conn.cursor().execute(sql)  # the cursor and its result left as they are


def _mysqlclient_connect(server: Any) -> Any:
    import MySQLdb

    return MySQLdb.connect(**_mysql_kwargs(server), database=server.database, connect_timeout=5)


def _mysql_connector_connect(server: Any, *, use_pure: bool = True) -> Any:
    import mysql.connector

    return mysql.connector.connect(
        **_mysql_kwargs(server),
        database=server.database,
        ssl_disabled=True,
        connection_timeout=5,
        use_pure=use_pure,
    )


def _mysql_connector_cext_connect(server: Any) -> Any:
    """What ``mysql.connector.connect()`` returns by default where the C extension loads."""
    import mysql.connector

    assert mysql.connector.HAVE_CEXT, (
        "the test extra pins a mysql-connector-python whose C extension loads"
    )
    conn = _mysql_connector_connect(server, use_pure=False)
    assert type(conn).__name__ == "CMySQLConnection"
    return conn


async def _mysql_connector_aio_connect(server: Any) -> Any:
    import mysql.connector.aio

    return await mysql.connector.aio.connect(
        **_mysql_kwargs(server), database=server.database, ssl_disabled=True
    )


async def _mysql_connector_aio_run(conn: Any, sql: str) -> Any:
    cursor = await conn.cursor()
    try:
        await cursor.execute(sql)
        return await cursor.fetchall() if cursor.description else None
    finally:
        await cursor.close()


async def _mysql_connector_aio_start(conn: Any, sql: str) -> None:
    await (await conn.cursor()).execute(sql)  # the cursor and its result left as they are


async def _aiomysql_connect(server: Any) -> Any:
    import aiomysql

    return await aiomysql.connect(**_mysql_kwargs(server), db=server.database, connect_timeout=5)


async def _aiomysql_run(conn: Any, sql: str) -> Any:
    async with conn.cursor() as cursor:
        await cursor.execute(sql)
        return await cursor.fetchall() if cursor.description else None


# --------------------------------------------------------------------------- PostgreSQL


def _psycopg_connect(server: Any) -> Any:
    import psycopg

    return psycopg.connect(**server.connect_kwargs())


def _psycopg_run(conn: Any, sql: str) -> Any:
    return _rows(conn.execute(sql))


def _psycopg2_connect(server: Any) -> Any:
    import psycopg2

    return psycopg2.connect(**server.connect_kwargs())


async def _asyncpg_connect(server: Any) -> Any:
    import asyncpg

    return await asyncpg.connect(
        host=server.host,
        port=server.port,
        user=server.user,
        password=server.password,
        database=server.database,
        ssl=False,
        timeout=5,
    )


async def _asyncpg_run(conn: Any, sql: str) -> Any:
    return await conn.fetch(sql)


DB_CLIENTS = [
    DBClient("pymysql", "mariadb", _pymysql_connect, _cursor_run, start=_cursor_start),
    DBClient("mysqlclient", "mariadb", _mysqlclient_connect, _cursor_run, start=_cursor_start),
    DBClient(
        "mysql-connector", "mariadb", _mysql_connector_connect, _cursor_run, start=_cursor_start
    ),
    DBClient(
        "mysql-connector",
        "mariadb",
        _mysql_connector_cext_connect,
        _cursor_run,
        start=_cursor_start,
        label="mysql-connector-cext",
    ),
    DBClient(
        "mysql-connector",
        "mariadb",
        _mysql_connector_aio_connect,
        _mysql_connector_aio_run,
        is_async=True,
        start=_mysql_connector_aio_start,
        label="mysql-connector-aio",
    ),
    DBClient("aiomysql", "mariadb", _aiomysql_connect, _aiomysql_run, is_async=True),
    DBClient("psycopg", "postgres", _psycopg_connect, _psycopg_run),
    DBClient("psycopg2", "postgres", _psycopg2_connect, _cursor_run, start=_cursor_start),
    DBClient("asyncpg", "postgres", _asyncpg_connect, _asyncpg_run, is_async=True),
]
SYNC_DB_CLIENTS = [client for client in DB_CLIENTS if not client.is_async]
ASYNC_DB_CLIENTS = [client for client in DB_CLIENTS if client.is_async]


# --------------------------------------------------------------------------- one body, any client


class _Ready:
    """An awaitable that is already done: what a sync client's call looks like to a body."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Any:
        return self.value
        yield  # a generator that never suspends


def run_now(coro: Any) -> Any:
    """Run a coroutine that never suspends (a body over a sync client) without a loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("a body over a sync client suspended: it awaited real I/O")


class Driver:
    """A client bound to its server, so that a test body is written once for every client:
    ``conn = await db.connect()``, ``await db.run(conn, sql)``. Sync clients run such a
    body in a sync handler (it never suspends), async ones in an async handler on ``loop``.
    """

    def __init__(self, client: DBClient, server: Any, loop: Any) -> None:
        self.client = client
        self.server = server
        self.loop = loop

    def __repr__(self) -> str:
        return f"<Driver {self.client.name} on {self.server!r}>"

    def _wrap(self, result: Any) -> Any:
        return result if self.client.is_async else _Ready(result)

    def connect(self) -> Any:
        return self._wrap(self.client.connect(self.server))

    def run(self, conn: Any, sql: str) -> Any:
        return self._wrap(self.client.run(conn, sql))

    def start(self, conn: Any, sql: str) -> Any:
        """Run ``sql`` and leave its result unread, where the client allows it."""
        start = self.client.start or self.client.run
        return self._wrap(start(conn, sql))

    def now(self, body: Callable[[], Any]) -> Any:
        """Run ``body()`` (anything returning an awaitable) outside any handler."""

        async def call() -> Any:
            return await body()

        return self.loop.run_until_complete(call()) if self.client.is_async else run_now(call())

    def invoke(self, body: Callable[[], Any], **options: Any) -> Any:
        """``body()`` as the client's kind of handler under ``@managed_connection(**options)``."""
        from lambda_conn import managed_connection

        if self.client.is_async:

            @managed_connection(**options)
            async def async_handler(event: object, context: object) -> Any:
                return await body()

            return self.loop.run_until_complete(async_handler({}, None))

        @managed_connection(**options)
        def handler(event: object, context: object) -> Any:
            return run_now(body())

        return handler({}, None)


# --------------------------------------------------------------------------- pools


@dataclass(frozen=True)
class DBPool:
    """A client's own pool: ``make(server, size)``, ``borrow(pool)``, ``give_back(pool,
    conn)``, ``close(pool)``; coroutine functions for async clients."""

    client: DBClient
    make: Callable[[Any, int], Any]
    borrow: Callable[[Any], Any]
    give_back: Callable[[Any, Any], Any]
    close: Callable[[Any], Any]

    def __str__(self) -> str:
        return self.client.name


def _client(name: str) -> DBClient:
    return next(client for client in DB_CLIENTS if client.name == name)


def _psycopg2_pool(server: Any, size: int) -> Any:
    from psycopg2.pool import ThreadedConnectionPool

    # psycopg2's pools keep only ``minconn`` idle connections (putconn closes the rest):
    # minconn = size, all discarded at once, so the pool reconnects when next asked.
    pool = ThreadedConnectionPool(size, size, **server.connect_kwargs())
    for conn in [pool.getconn() for _ in range(size)]:
        pool.putconn(conn, close=True)
    return pool


def _psycopg2_close(pool: Any) -> None:
    if not pool.closed:
        pool.closeall()


async def _asyncpg_pool(server: Any, size: int) -> Any:
    import asyncpg

    return await asyncpg.create_pool(
        host=server.host,
        port=server.port,
        user=server.user,
        password=server.password,
        database=server.database,
        ssl=False,
        min_size=0,
        max_size=size,
    )


async def _asyncpg_give_back(pool: Any, conn: Any) -> None:
    await pool.release(conn)


async def _asyncpg_close(pool: Any) -> None:
    await pool.close()


async def _aiomysql_pool(server: Any, size: int) -> Any:
    import aiomysql

    return await aiomysql.create_pool(
        **_mysql_kwargs(server), db=server.database, minsize=0, maxsize=size
    )


async def _aiomysql_borrow(pool: Any) -> Any:
    return await pool.acquire()


async def _aiomysql_give_back(pool: Any, conn: Any) -> None:
    pool.release(conn)


async def _aiomysql_close(pool: Any) -> None:
    pool.close()
    await pool.wait_closed()


def _mysql_connector_pool(server: Any, size: int) -> Any:
    from mysql.connector.pooling import MySQLConnectionPool

    return MySQLConnectionPool(
        pool_size=size,
        **_mysql_kwargs(server),
        database=server.database,
        ssl_disabled=True,
        connection_timeout=5,
        use_pure=True,
    )


def _mysql_connector_close(pool: Any) -> None:
    pool._remove_connections()


DB_POOLS = [
    DBPool(
        _client("psycopg2"),
        _psycopg2_pool,
        lambda pool: pool.getconn(),
        lambda pool, conn: pool.putconn(conn),
        _psycopg2_close,
    ),
    DBPool(
        _client("asyncpg"),
        _asyncpg_pool,
        lambda pool: pool.acquire(),
        _asyncpg_give_back,
        _asyncpg_close,
    ),
    DBPool(
        _client("aiomysql"), _aiomysql_pool, _aiomysql_borrow, _aiomysql_give_back, _aiomysql_close
    ),
    DBPool(
        _client("mysql-connector"),
        _mysql_connector_pool,
        lambda pool: pool.get_connection(),
        lambda pool, conn: conn.close(),  # a pooled connection's close() gives it back
        _mysql_connector_close,
    ),
]
