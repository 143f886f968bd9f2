"""mysql-connector-python: every ``MySQLConnection`` built in a scope is closed with
COM_QUIT at its end.

Its ``close()`` skips COM_QUIT, silently, while a result is unread ("Unread result
found"), so the server would count an aborted client: the scope drops the unread result
first, then closes. A connection a ``MySQLConnectionPool`` makes belongs to the pool
(``connect(pool_name=...)`` keeps its pools for the life of the process).
"""

from __future__ import annotations

from lambda_conn._integrations._track import tracker
from lambda_conn._kinds import Kind, register_kind
from lambda_conn._liveness import socket_idle_and_open
from lambda_conn._registry import Integration
from lambda_conn._scope import untracked

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any


def _socket(cnx: Any) -> Any:
    network = cnx._socket
    return network.sock if network is not None else None


def _is_open(cnx: Any) -> bool:
    sock = _socket(cnx)
    try:
        return sock is not None and sock.fileno() >= 0
    except (OSError, ValueError):
        return False


def _close(cnx: Any) -> None:
    if not _is_open(cnx):
        return
    if cnx.unread_result:
        cnx.unread_result = False  # else close() drops the socket without COM_QUIT
    cnx.close()


def _alive(cnx: Any) -> bool:
    return _is_open(cnx) and socket_idle_and_open(_socket(cnx))


def _remote(cnx: Any) -> list[str]:
    if cnx.unix_socket:
        return [str(cnx.unix_socket)]
    return [f"{cnx.server_host}:{cnx.server_port}"]


CONNECTION = Kind(
    "mysql.connector.MySQLConnection",
    "mysql-connector",
    close=_close,
    is_open=_is_open,
    remote=_remote,
    alive=_alive,
)


def _pools_own(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    with untracked():
        return wrapped(*args, **kwargs)


def patch_mysql_connector(connector: ModuleType) -> None:
    import wrapt
    from mysql.connector import connection, pooling

    wrapt.wrap_function_wrapper(
        connection, "MySQLConnection.__init__", tracker("mysql-connector", CONNECTION)
    )
    for method in ("__init__", "set_config", "add_connection"):
        wrapt.wrap_function_wrapper(pooling, f"MySQLConnectionPool.{method}", _pools_own)
    register_kind(connection.MySQLConnection, CONNECTION)


INTEGRATION = Integration("mysql-connector", hooks={"mysql.connector": patch_mysql_connector})
