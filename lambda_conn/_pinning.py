"""Pinning you can see: statements that make RDS Proxy pin a connection, logged once.

RDS Proxy multiplexes client connections over fewer database connections, until a
statement changes session state the proxy cannot carry over: it then *pins* the client
connection to one database connection until it disconnects (for a reused connection, the
life of the environment). Nothing tells the application which of its statements did it.

Opt-in (``LAMBDA_CONN_PINNING_CHECK=1`` when the first handler is decorated, or
``enable_pinning_check()`` / ``RDSConnector(pinning_check=True)``): the drivers' statement
entry points (PyMySQL ``Connection.query``, psycopg 3 ``Cursor.execute``/``executemany``)
are wrapped, and each statement on a tracked or reused connection is classified by the
documented pinning rules. Each class is logged once per connection as ``rds_proxy_pinning``
with the class and the engine, never the statement or its values, and counted in
``stats()["pinning"]``. Off, nothing is wrapped: zero cost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import weakref
from typing import Any

ENV = "LAMBDA_CONN_PINNING_CHECK"

#: Statements above this size pin a MySQL proxy connection (RDS Proxy documents 16 KB).
MYSQL_MAX_STATEMENT = 16 * 1024

# Session variables RDS Proxy tracks for MySQL/MariaDB: setting them does not pin.
_MYSQL_TRACKED = frozenset(
    {
        "autocommit",
        "auto_increment_increment",
        "character_set_client",
        "character_set_connection",
        "character_set_database",
        "character_set_results",
        "collation_connection",
        "collation_database",
        "names",
        "sql_mode",
        "time_zone",
        "transaction_isolation",
        "tx_isolation",
        "transaction_read_only",
        "tx_read_only",
    }
)

_LEADING = re.compile(r"^(?:\s+|/\*.*?\*/|--[^\n]*\n|#[^\n]*\n)*", re.S)
_MYSQL_SET_TARGET = re.compile(
    r"(?:,|^)\s*(?:(?:session|local)\s+|@@(?:session\.|local\.)?)?(@?[A-Za-z_][A-Za-z0-9_$]*)",
    re.I,
)
_MYSQL_ANYWHERE = re.compile(r"\bget_lock\s*\(", re.I)
_MYSQL_TEMP = re.compile(r"^create\s+temporary\s+table\b", re.I)
_MYSQL_LOCK = re.compile(r"^lock\s+tables?\b", re.I)
_PG_ANYWHERE = re.compile(r"\b(?:(set_config)|(pg_(?:try_)?advisory_lock(?:_shared)?))\s*\(", re.I)
_PG_TEMP = re.compile(
    r"^create\s+(?:or\s+replace\s+)?(?:global\s+|local\s+)?(?:temp|temporary)\s+"
    r"(?:unlogged\s+)?(table|view|sequence)\b",
    re.I,
)
_PG_HOLD = re.compile(r"^declare\s+.*?\bwith\s+hold\b", re.I | re.S)


def _first_word(sql: str) -> tuple[str, str]:
    """The statement after comments and blanks, and its first keyword in lower case."""
    body = sql.lstrip()
    if body[:1] in ("/", "-", "#"):  # a leading comment (rare): the regex skips them all
        body = sql[_LEADING.match(sql).end() :]  # type: ignore[union-attr]
    head = body[:12].split(None, 1)
    return body, head[0].lower().rstrip(";(") if head else ""


def classify_mysql(sql: str | bytes) -> str | None:
    """The pinning class of a MySQL statement, or None when it does not pin."""
    if isinstance(sql, (bytes, bytearray)):
        if len(sql) > MYSQL_MAX_STATEMENT:
            return "statement over 16 KB"
        sql = bytes(sql[:4096]).decode("utf-8", "replace")
    elif len(sql) > MYSQL_MAX_STATEMENT or (
        len(sql) > MYSQL_MAX_STATEMENT // 4 and len(sql.encode()) > MYSQL_MAX_STATEMENT
    ):
        return "statement over 16 KB"
    body, word = _first_word(sql)
    if word == "set":
        rest = body[3:]
        if re.match(r"\s+(?:names|character\s+set|charset|char\s+set|transaction)\b", rest, re.I):
            return None
        for target in _MYSQL_SET_TARGET.findall(_assignments(rest)):
            if target.lower() in ("global", "persist", "persist_only"):
                return None  # server-wide, not session state (and needs privileges)
            if target.startswith("@"):
                return "SET user variable"
            if target.lower() not in _MYSQL_TRACKED:
                return "SET session variable (not tracked by the proxy)"
        return None
    if word in ("prepare", "execute", "deallocate"):
        return "PREPARE/EXECUTE (server-side prepared statement)"
    if word == "create" and _MYSQL_TEMP.match(body):
        return "temporary table"
    if word == "lock" and _MYSQL_LOCK.match(body):
        return "LOCK TABLES"
    if _MYSQL_ANYWHERE.search(sql):
        return "GET_LOCK()"
    return None


def _assignments(rest: str) -> str:
    """The assigned names of a SET list, values dropped (``a = 1, b = 'x'`` -> ``a, b``)."""
    names = []
    for part in re.split(r",(?=(?:[^']*'[^']*')*[^']*$)", rest):
        name = part.split("=", 1)[0].split(":=", 1)[0].strip()
        if name:
            names.append(name)
    return ", ".join(names)


def classify_postgres(sql: str | bytes) -> str | None:
    """The pinning class of a PostgreSQL statement, or None when it does not pin."""
    if isinstance(sql, (bytes, bytearray)):
        sql = bytes(sql[:4096]).decode("utf-8", "replace")
    body, word = _first_word(sql)
    if word == "set" or word == "reset":
        if re.match(r"(?:set|reset)\s+local\b", body, re.I):
            return None  # ends with the transaction
        return "SET session parameter"
    if word in ("prepare", "deallocate"):
        return "PREPARE/DEALLOCATE"
    if word == "discard":
        return "DISCARD"
    if word == "listen":
        return "LISTEN"
    if word == "load":
        return "LOAD (library module)"
    if word == "create":
        temp = _PG_TEMP.match(body)
        if temp:
            return f"temporary {temp.group(1).lower()}"
    if word == "declare" and _PG_HOLD.match(body):
        return "cursor WITH HOLD"
    found = _PG_ANYWHERE.search(sql)
    if found:
        return "set_config()" if found.group(1) else "session advisory lock"
    return None


# --------------------------------------------------------------------------- reporting

_logged: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
_watched: weakref.WeakSet[Any] = weakref.WeakSet()
_lock = threading.Lock()
_enabled = False


def watch(conn: Any) -> Any:
    """Check ``conn`` whether or not a scope tracks it (``RDSConnector(pinning_check=True)``)."""
    with contextlib.suppress(TypeError):  # not weak-referenceable: tracked/reused still apply
        _watched.add(conn)
    return conn


def _is_watched(conn: Any) -> bool:
    if conn in _watched:
        return True
    from lambda_conn._scope import current_scope

    scope = current_scope()
    if scope is not None and conn in scope:
        return True
    from lambda_conn import _reuse

    return any(
        (reused := ref()) is not None and reused._conn is conn for ref in list(_reuse._registry)
    )


def report(conn: Any, engine: str, statement_class: str) -> None:
    """Log ``statement_class`` for ``conn`` unless already logged for it."""
    if not _is_watched(conn):
        return
    with _lock:
        seen = _logged.get(conn)
        if seen is None:
            seen = set()
            with contextlib.suppress(TypeError):
                _logged[conn] = seen
        if statement_class in seen:
            return
        seen.add(statement_class)
    from lambda_conn._log import log_event
    from lambda_conn._stats import counters

    counters.pinning += 1
    log_event(
        logging.WARNING,
        "rds_proxy_pinning",
        engine=engine,
        statement_class=statement_class,
        connection=type(conn).__module__.split(".")[0] + "." + type(conn).__name__,
        hint="behind RDS Proxy this pins the connection to one database connection until it "
        "closes (see docs/reuse-vs-close.md, Pinning)",
    )


# --------------------------------------------------------------------------- wrapping


def _pymysql_query(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: Any) -> Any:
    sql = args[0] if args else kwargs.get("sql")
    if sql is not None:
        found = classify_mysql(sql)
        if found is not None:
            report(instance, "mysql", found)
    return wrapped(*args, **kwargs)


def _psycopg_text(query: Any, cursor: Any) -> str | bytes | None:
    if isinstance(query, (str, bytes)):
        return query
    try:
        return str(query.as_string(cursor))
    except Exception:
        return None


def _after_psycopg(cursor: Any) -> None:
    conn = cursor.connection
    prepared = getattr(getattr(conn, "_prepared", None), "_names", None)
    if prepared:  # psycopg prepared a statement on the server (prepare_threshold)
        report(conn, "postgresql", "server-side prepared statement (psycopg prepare_threshold)")


def _psycopg_execute(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: Any) -> Any:
    query = args[0] if args else kwargs.get("query")
    text = _psycopg_text(query, instance)
    if text is not None:
        found = classify_postgres(text)
        if found is not None:
            report(instance.connection, "postgresql", found)
    if getattr(instance, "_withhold", False):
        report(instance.connection, "postgresql", "cursor WITH HOLD")
    result = wrapped(*args, **kwargs)
    _after_psycopg(instance)
    return result


def _patch_pymysql() -> None:
    import pymysql.connections
    import wrapt

    wrapt.wrap_function_wrapper(pymysql.connections, "Connection.query", _pymysql_query)


def _patch_psycopg() -> None:
    import psycopg
    import wrapt

    for cls in (psycopg.Cursor, psycopg.ServerCursor):
        for method in ("execute", "executemany"):
            if method in vars(cls):
                wrapt.wrap_function_wrapper(cls, method, _psycopg_execute)


def enable_pinning_check() -> None:
    """Wrap the installed drivers' statement entry points (idempotent; imports them)."""
    global _enabled
    with _lock:
        if _enabled:
            return
        _enabled = True
    import importlib.util

    for module, patch in (("pymysql", _patch_pymysql), ("psycopg", _patch_psycopg)):
        if importlib.util.find_spec(module) is not None:
            patch()


def enabled() -> bool:
    return _enabled


def enable_from_environment() -> None:
    """``LAMBDA_CONN_PINNING_CHECK`` set to a true word turns the check on (see _settings)."""
    from lambda_conn._settings import env_value, parse_bool

    value = env_value(os.environ, ENV)
    if value is not None and parse_bool(ENV, value):
        enable_pinning_check()
