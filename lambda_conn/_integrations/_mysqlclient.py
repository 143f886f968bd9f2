"""mysqlclient (``MySQLdb``): every ``Connection`` built in a scope is closed at its end.

``close()`` is libmariadb's ``mysql_close``, which sends COM_QUIT (the server counts no
aborted client) and frees the socket; calling it twice raises, so a closed connection is
left alone.
"""

from __future__ import annotations

from lambda_conn._integrations._track import tracker
from lambda_conn._kinds import Kind, register_kind
from lambda_conn._liveness import socket_idle_and_open
from lambda_conn._registry import Integration, Statements

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any


def _close(conn: Any) -> None:
    if conn.open:
        conn.close()


def _is_open(conn: Any) -> bool:
    return bool(conn.open)  # stays true after the server ended the session, until close()


def _alive(conn: Any) -> bool:
    return bool(conn.open) and socket_idle_and_open(conn)


def _remote(conn: Any) -> list[str]:
    if not conn.port:  # a unix socket: libmariadb reports "localhost" and port 0
        return [conn.get_host_info()]
    return [f"{conn.host}:{conn.port}"]


CONNECTION = Kind(
    "MySQLdb.Connection",
    "mysqlclient",
    close=_close,
    is_open=_is_open,
    remote=_remote,
    alive=_alive,
)


def patch_mysqlclient(connections: ModuleType) -> None:
    import wrapt

    wrapt.wrap_function_wrapper(
        connections, "Connection.__init__", tracker("mysqlclient", CONNECTION)
    )
    register_kind(connections.Connection, CONNECTION)


def observe_statements(connections: ModuleType, check: Any) -> None:
    """Cursors send every statement through the Python ``Connection.query`` (before the C
    ``_mysql`` call); mysqlclient has no binary-protocol prepared statements."""
    check.method(connections.Connection, "query", sql=(0, "query"))


# MySQLdb imports its connections module only on the first connect.
INTEGRATION = Integration(
    "mysqlclient",
    hooks={"MySQLdb.connections": patch_mysqlclient},
    statements=Statements("mysql", hooks={"MySQLdb.connections": observe_statements}),
)
