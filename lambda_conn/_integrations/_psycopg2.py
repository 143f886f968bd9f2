"""psycopg2: every connection made in a scope is closed at its end, and so is every pool
(``psycopg2.pool``) built in it, with the connections it has handed out.

psycopg2's ``connection`` is a C type whose ``__init__`` cannot be wrapped, so the hook is
``psycopg2._connect``, which ``psycopg2.connect`` looks up at every call: connections are
tracked however ``connect`` was imported, whatever ``connection_factory`` makes them.
``close()`` ends with libpq's ``PQfinish``, which sends Terminate (no "unexpected EOF" in
the server log, even inside a transaction) and frees the socket, also for a connection
psycopg2 already marked broken.

A connection a pool makes belongs to the pool: a module-level pool that grows during an
invocation keeps its connections.
"""

from __future__ import annotations

from lambda_conn._integrations._track import pool_probes, tracker, untracked_call
from lambda_conn._kinds import Kind, reconnects, register_kind
from lambda_conn._liveness import socket_idle_and_open
from lambda_conn._registry import Integration, Statements
from lambda_conn._scope import _current

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any


def _close(conn: Any) -> None:
    conn.close()  # idempotent; also finishes a connection marked broken (closed == 2)


def _is_open(conn: Any) -> bool:
    return bool(conn.closed != 1)  # 0 open; 2 broken, libpq still holds the socket until close()


def _alive(conn: Any) -> bool:
    return bool(conn.closed == 0) and socket_idle_and_open(conn)


def _remote(conn: Any) -> list[str]:
    info = conn.info
    return [f"{info.host}:{info.port}"]


CONNECTION = Kind(
    "psycopg2.connection",
    "psycopg2",
    close=_close,
    is_open=_is_open,
    remote=_remote,
    alive=_alive,
)


def _track_connect(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    conn = wrapped(*args, **kwargs)
    scope = _current.get()
    if scope is not None and scope.tracks("psycopg2"):
        scope.register(conn, CONNECTION)
    return conn


# --------------------------------------------------------------------------- pools


def _pool_connections(pool: Any) -> list[Any]:
    return [*pool._pool, *pool._used.values()]


def _close_pool(pool: Any) -> None:
    if not pool.closed:
        pool.closeall()  # the idle connections and the ones handed out


_pool_is_open, _pool_remote = pool_probes(_pool_connections, _is_open, _remote)


POOL = Kind(
    "psycopg2.pool.AbstractConnectionPool",
    "psycopg2",
    close=_close_pool,
    is_open=_pool_is_open,
    remote=_pool_remote,
    alive=reconnects,
)


def patch_psycopg2(psycopg2: ModuleType) -> None:
    import wrapt

    wrapt.wrap_function_wrapper(psycopg2, "_connect", _track_connect)
    register_kind(psycopg2.extensions.connection, CONNECTION)


def patch_psycopg2_pool(pool: ModuleType) -> None:
    import wrapt

    wrapt.wrap_function_wrapper(pool, "AbstractConnectionPool.__init__", tracker("psycopg2", POOL))
    wrapt.wrap_function_wrapper(pool, "AbstractConnectionPool._connect", untracked_call)
    register_kind(pool.AbstractConnectionPool, POOL)


# --------------------------------------------------------------------------- statements
#
# psycopg2's cursor is a C type whose methods cannot be wrapped. What can be: the cursor
# class a connection makes by default (``connection.cursor_factory``, settable), replaced
# at connect by a subclass that checks each statement; and the Python cursor classes of
# psycopg2.extras (DictCursor, RealDictCursor, NamedTupleCursor, LoggingCursor), whose own
# ``execute``/``executemany`` are wrapped, for ``conn.cursor(cursor_factory=...)``.

_CHECKED = ("execute", "executemany")
_observed: set[tuple[type, str]] = set()  # (class, method) whose statements are checked
_subclasses: dict[type, type] = {}
_ours: set[type] = set()


def _statement_text(query: Any, cursor: Any) -> Any:
    if isinstance(query, (str, bytes)):
        return query
    try:
        return query.as_string(cursor)  # psycopg2.sql.Composable
    except Exception:
        return None


def _check_cursor(check: Any, cursor: Any, query: Any) -> None:
    conn = cursor.connection
    check.statement(conn, _statement_text(query, cursor))
    if cursor.name is not None and cursor.withhold:
        check.found(conn, "cursor WITH HOLD")


def _checking_subclass(base: type, check: Any) -> type:
    """``base`` with ``execute``/``executemany`` checked (those not checked already)."""
    if base in _ours:
        return base
    cls = _subclasses.get(base)
    if cls is None:
        methods: dict[str, Any] = {"__module__": __name__, "__qualname__": base.__qualname__}
        for name in _CHECKED:
            if any((klass, name) in _observed for klass in base.__mro__):
                continue
            original = getattr(base, name)

            def checked(self: Any, query: Any, *args: Any, _run: Any = original, **kw: Any) -> Any:
                _check_cursor(check, self, query)
                return _run(self, query, *args, **kw)

            methods[name] = checked
        cls = type(base.__name__, (base,), methods)
        for name in _CHECKED:
            _observed.add((cls, name))
        _subclasses[base] = cls
        _ours.add(cls)
    return cls


def observe_statements(psycopg2: ModuleType, check: Any) -> None:
    import wrapt

    def connect(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: Any) -> Any:
        conn = wrapped(*args, **kwargs)
        factory = conn.cursor_factory or psycopg2.extensions.cursor
        conn.cursor_factory = _checking_subclass(factory, check)
        return conn

    # ``_connect`` makes every connection (whichever way ``connect`` was imported);
    # ``connect`` then sets the ``cursor_factory=`` it was given, which is checked again.
    wrapt.wrap_function_wrapper(psycopg2, "_connect", connect)
    wrapt.wrap_function_wrapper(psycopg2, "connect", connect)


def observe_extras(extras: ModuleType, check: Any) -> None:
    import wrapt

    base = extras._cursor  # psycopg2.extensions.cursor

    def checked(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: Any) -> Any:
        _check_cursor(check, instance, args[0] if args else kwargs.get("query"))
        return wrapped(*args, **kwargs)

    for value in list(vars(extras).values()):
        if isinstance(value, type) and issubclass(value, base) and value is not base:
            for name in _CHECKED:
                if name in vars(value):
                    wrapt.wrap_function_wrapper(value, name, checked)
                    _observed.add((value, name))


INTEGRATION = Integration(
    "psycopg2",
    hooks={"psycopg2": patch_psycopg2, "psycopg2.pool": patch_psycopg2_pool},
    statements=Statements(
        "postgresql", hooks={"psycopg2": observe_statements, "psycopg2.extras": observe_extras}
    ),
)
