"""Pinning you can see: statements that make RDS Proxy pin a connection, logged once.

RDS Proxy multiplexes client connections over fewer database connections, until a
statement changes session state the proxy cannot carry over: it then *pins* the client
connection to one database connection until it disconnects (for a reused connection, the
life of the environment). Nothing tells the application which of its statements did it.

Opt-in (``LAMBDA_CONN_PINNING_CHECK=1`` when the first handler is decorated, or
``enable_pinning_check()`` / ``RDSConnector(pinning_check=True)``): each client integration
declares where its statements pass (``Integration(statements=Statements(...))``: PyMySQL's
``Connection.query``, mysqlclient's and aiomysql's ``Connection.query``, mysql-connector's
``cmd_query`` and binary-protocol ``cmd_stmt_prepare``, psycopg 3's ``Cursor.execute``,
psycopg2's cursors, asyncpg's ``_get_statement`` and ``execute``), those entry points are
wrapped, and each statement on a tracked or reused
connection is classified by the documented pinning rules. Each class is logged once per
connection as ``rds_proxy_pinning`` with the class and the engine, never the statement or
its values, and counted in ``stats()["pinning"]``. Off, nothing is wrapped: zero cost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import weakref
from collections.abc import Callable
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


class Check:
    """What a client's statement hook calls (see ``lambda_conn._registry.Statements``).

    It classifies a statement and reports its class for the connection; the statement
    itself is never kept, logged or passed on.
    """

    __slots__ = ("classify", "engine")

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self.classify = classify_mysql if engine == "mysql" else classify_postgres

    def statement(self, conn: Any, sql: Any) -> None:
        """Classify ``sql`` (str or bytes; anything else is skipped) run on ``conn``."""
        if isinstance(sql, (str, bytes, bytearray)):
            found = self.classify(bytes(sql) if isinstance(sql, bytearray) else sql)
            if found is not None:
                report(conn, self.engine, found)

    def found(self, conn: Any, statement_class: str) -> None:
        """``conn`` did something that pins whatever its text (a binary-protocol prepare)."""
        report(conn, self.engine, statement_class)

    def method(
        self,
        cls: type,
        name: str,
        *,
        sql: tuple[int, str] | None = (0, "sql"),
        statement_class: str | None = None,
        connection: Callable[[Any], Any] | None = None,
    ) -> None:
        """Wrap ``cls.name`` so each call is checked before it runs: the statement is the
        positional argument ``sql[0]`` or keyword ``sql[1]``, or the call always pins as
        ``statement_class``; the connection is the instance, or ``connection(instance)``.
        An ``async def`` stays one (the check runs when it is called)."""
        import wrapt

        def checked(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: Any) -> Any:
            conn = instance if connection is None else connection(instance)
            if statement_class is not None:
                self.found(conn, statement_class)
            elif sql is not None:
                position, keyword = sql
                self.statement(
                    conn, args[position] if len(args) > position else kwargs.get(keyword)
                )
            return wrapped(*args, **kwargs)

        wrapt.wrap_function_wrapper(cls, name, checked)


def _observe(integration: Any) -> None:
    """Hook ``integration``'s statement entry points (now, or when their module loads)."""
    statements = integration.statements
    if statements is None:
        return
    import functools

    import wrapt

    check = Check(statements.engine)
    for module, patch in statements.hooks.items():
        wrapt.register_post_import_hook(
            functools.partial(_patch, integration.name, patch, check), module
        )


def _patch(client: str, patch: Callable[[Any, Check], None], check: Check, module: Any) -> None:
    try:
        patch(module, check)
    except Exception as exc:  # never break the user's import
        from lambda_conn._log import log_event

        log_event(
            logging.WARNING,
            "pinning_check_unavailable",
            client=client,
            module=module.__name__,
            error=repr(exc),
        )


def enable_pinning_check() -> None:
    """Observe the statements of every client whose integration declares them
    (``Integration(statements=...)``): those already imported now, the others when they
    are imported. Idempotent; imports no client."""
    global _enabled
    with _lock:
        if _enabled:
            return
        _enabled = True
    from lambda_conn import _registry

    for integration in _registry.integrations():
        _observe(integration)
    with _registry._lock:
        _registry._on_register.append(_observe)  # clients registered later


def enabled() -> bool:
    return _enabled


def enable_from_environment() -> None:
    """``LAMBDA_CONN_PINNING_CHECK`` set to a true word turns the check on (see _settings)."""
    from lambda_conn._settings import env_value, parse_bool

    value = env_value(os.environ, ENV)
    if value is not None and parse_bool(ENV, value):
        enable_pinning_check()
