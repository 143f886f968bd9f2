"""How full the database server is: its connections in use against its ``max_connections``.

Asked on a connection the function already holds (no new connection, no privilege beyond
an ordinary user's): MySQL/MariaDB ``Threads_connected`` and ``@@max_connections``,
PostgreSQL's client backends in ``pg_stat_activity`` and ``max_connections``. A reused
connection samples it at the end of an invocation, at most every few seconds, to let go
of its session while the server is nearly full (``reused_connection(release_above=...)``).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# MariaDB: one round trip (either form makes the server add up its global status: about
# 0.6-0.7 ms of a loaded MariaDB 10.11 here, once per sample_every).
MARIADB = (
    "SELECT @@max_connections, VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS "
    "WHERE VARIABLE_NAME = 'THREADS_CONNECTED'"
)
# MySQL 8 (Aurora MySQL 3) removed information_schema.GLOBAL_STATUS, and its
# performance_schema may be off: SHOW works on every MySQL, in two round trips.
MYSQL_MAX = "SELECT @@max_connections"
MYSQL_IN_USE = "SHOW GLOBAL STATUS LIKE 'Threads_connected'"
POSTGRES = (
    "SELECT count(*), current_setting('max_connections')::int "
    "FROM pg_stat_activity WHERE backend_type = 'client backend'"
)

#: The synchronous DB-API clients a reused connection can sample on, by integration kind.
FAMILIES = {
    "pymysql.Connection": "mysql",
    "MySQLdb.Connection": "mysql",
    "mysql.connector.MySQLConnection": "mysql",
    "mysql.connector.CMySQLConnection": "mysql",
    "psycopg.Connection": "postgres",
    "psycopg2.connection": "postgres",
}


def family(conn: Any) -> str | None:
    """``"mariadb"``, ``"mysql"``, ``"postgres"``, or None for a client that cannot be
    sampled. Read from the client's state: no round trip."""
    from lambda_conn import _tracking
    from lambda_conn._kinds import registered_kind

    _tracking.install()  # registers the kinds of the clients already imported
    kind = registered_kind(conn)
    name = FAMILIES.get(kind.name) if kind is not None else None
    if name == "mysql" and "mariadb" in _server_version(conn).lower():
        return "mariadb"
    return name


def _server_version(conn: Any) -> str:
    """The version the server sent in its handshake (no round trip)."""
    for name in ("server_version", "server_info"):  # PyMySQL; mysql-connector's property
        version = getattr(conn, name, None)
        if isinstance(version, str):
            return version
    try:
        return str(conn.get_server_info())  # mysqlclient
    except Exception:
        return ""


def _rows(conn: Any, sql: str) -> list[Any]:
    cursor = conn.cursor()
    try:
        cursor.execute(sql)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def sample(conn: Any, family: str) -> tuple[int, int]:
    """``(connections in use, max_connections)`` as the server counts them now.

    The MySQL statements open no transaction; on PostgreSQL without autocommit the
    SELECT opens one, which the caller ends (``transaction_state`` tells it).
    """
    if family == "mariadb":
        row = _rows(conn, MARIADB)[0]
        return int(row[1]), int(row[0])
    if family == "mysql":
        maximum = int(_rows(conn, MYSQL_MAX)[0][0])
        in_use = int(_rows(conn, MYSQL_IN_USE)[0][1])
        return in_use, maximum
    row = _rows(conn, POSTGRES)[0]
    return int(row[0]), int(row[1])
