"""PyMySQL: every ``Connection`` built inside a scope is closed with COM_QUIT at its end."""

from __future__ import annotations

from lambda_conn._integrations._light import pymysql_closed
from lambda_conn._integrations._returned_db import cut, unread_result
from lambda_conn._integrations._track import tracker
from lambda_conn._kinds import Kind, register_kind
from lambda_conn._liveness import socket_idle_and_open
from lambda_conn._registry import Integration, Statements

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any


def _close(conn: Any) -> None:
    if conn._sock is None:
        pymysql_closed(conn)  # closed by the handler: still lighten what it keeps
        return
    unread = unread_result(conn)  # an SSCursor still reading: it must fail clearly
    try:
        if not conn._closed:
            conn.close()  # sends COM_QUIT, so the server logs no aborted connection
    finally:
        if conn._sock is not None:
            conn._force_close()
        if unread:
            cut(conn)
        pymysql_closed(conn)


def _is_open(conn: Any) -> bool:
    return conn._sock is not None


def _remote(conn: Any) -> list[str]:
    return [f"{conn.host}:{conn.port}"]


def _alive(conn: Any) -> bool:
    return conn._sock is not None and socket_idle_and_open(conn._sock)


PYMYSQL = Kind(
    "pymysql.Connection",
    "pymysql",
    close=_close,
    is_open=_is_open,
    remote=_remote,
    alive=_alive,
)


def patch_pymysql(pymysql: ModuleType) -> None:
    import wrapt

    connections = pymysql.connections
    wrapt.wrap_function_wrapper(connections, "Connection.__init__", tracker("pymysql", PYMYSQL))
    register_kind(connections.Connection, PYMYSQL)


def observe_statements(pymysql: ModuleType, check: Any) -> None:
    """Every statement, from any cursor or ``conn.query()``, passes ``Connection.query``."""
    check.method(pymysql.connections.Connection, "query", sql=(0, "sql"))


INTEGRATION = Integration(
    "pymysql",
    hooks={"pymysql": patch_pymysql},
    statements=Statements("mysql", hooks={"pymysql": observe_statements}),
)
