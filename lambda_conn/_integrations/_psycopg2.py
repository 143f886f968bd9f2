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


def register(conn: Any) -> Any:
    """Track ``conn`` in the current scope, as a connection made in it is."""
    scope = _current.get()
    if scope is not None and scope.tracks("psycopg2"):
        scope.register(conn, CONNECTION)
    return conn


def _track_connect(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    return register(wrapped(*args, **kwargs))


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
# psycopg2's connection and cursor are C types whose methods cannot be wrapped. What can
# be: the class a connection is made of (``connection_factory=``, which ``_connect`` takes),
# replaced at connect by a subclass of it whose ``cursor()`` makes each cursor of a
# subclass of the class asked for (``cursor_factory=`` given to ``cursor()``, else the
# connection's ``cursor_factory``, else its default) that checks each statement; and the
# Python cursor classes of psycopg2.extras (DictCursor, RealDictCursor, NamedTupleCursor,
# LoggingCursor), whose own ``execute``/``executemany`` are wrapped. A ``connection_factory``
# that is a function, not a class, keeps the connection it makes: that connection's
# ``cursor_factory`` is replaced by a checking subclass instead (its ``cursor(cursor_factory=)``
# is then not checked).

_CHECKED = ("execute", "executemany")
_observed: set[tuple[type, str]] = set()  # (class, method) whose statements are checked
_subclasses: dict[type, type] = {}
_ours: set[type] = set()
_connection_classes: dict[type, type] = {}  # connection class -> its checking subclass


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


def _checking_connection(base: Any, default: Any, check: Any) -> Any:
    """``base`` (a psycopg2 connection class) whose ``cursor()`` makes checking cursors."""
    if base in _connection_classes.values():
        return base
    cls = _connection_classes.get(base)
    if cls is not None:
        return cls
    make_cursor = base.cursor
    overrides = make_cursor is not default.cursor  # e.g. DictConnection's default

    def cursor(self: Any, *args: Any, **kwargs: Any) -> Any:
        # cursor(name=None, cursor_factory=None, withhold=False, scrollable=None)
        if len(args) > 1:
            if isinstance(args[1], type):
                args = (args[0], _checking_subclass(args[1], check), *args[2:])
            return make_cursor(self, *args, **kwargs)
        factory = kwargs.get("cursor_factory") or self.cursor_factory
        if factory is None and not overrides:
            factory = _default_cursor[0]
        if isinstance(factory, type):
            kwargs["cursor_factory"] = _checking_subclass(factory, check)
            return make_cursor(self, *args, **kwargs)
        made = make_cursor(self, *args, **kwargs)  # the class's own default cursor
        if type(made) in _ours or all(
            any((klass, name) in _observed for klass in type(made).__mro__) for name in _CHECKED
        ):
            return made
        made.close()  # not yet used: made again of a checking subclass of its class
        kwargs["cursor_factory"] = _checking_subclass(type(made), check)
        return make_cursor(self, *args, **kwargs)

    # Named as the class it stands in for, so logs and reprs show the application's class.
    cls = type(base.__name__, (base,), {"cursor": cursor, "__module__": base.__module__})
    cls.__qualname__ = base.__qualname__
    _connection_classes[base] = cls
    return cls


_default_cursor: list[type] = []  # psycopg2.extensions.cursor, once psycopg2 is imported


def observe_statements(psycopg2: ModuleType, check: Any) -> None:
    import wrapt

    extensions = psycopg2.extensions
    _default_cursor[:] = [extensions.cursor]

    def make(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: Any) -> Any:
        # _connect(dsn, connection_factory=None, async_=False): every connection is made
        # here, whichever way ``connect`` was imported.
        if len(args) > 1:
            factory = args[1] or extensions.connection
            if isinstance(factory, type):
                checking = _checking_connection(factory, extensions.connection, check)
                args = (args[0], checking, *args[2:])
        else:
            factory = kwargs.get("connection_factory") or extensions.connection
            if isinstance(factory, type):
                checking = _checking_connection(factory, extensions.connection, check)
                kwargs = {**kwargs, "connection_factory": checking}
        return finish(wrapped(*args, **kwargs))

    def connect(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: Any) -> Any:
        return finish(wrapped(*args, **kwargs))  # after it set the cursor_factory= it got

    def finish(conn: Any) -> Any:
        # A connection a factory function made is of a class not ours: its default cursor
        # class is replaced instead.
        if type(conn) not in _connection_classes.values():
            base = conn.cursor_factory or extensions.cursor
            conn.cursor_factory = _checking_subclass(base, check)
        return conn

    wrapt.wrap_function_wrapper(psycopg2, "_connect", make)
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
