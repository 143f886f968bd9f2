"""SQLAlchemy 2.x: Engines built in a scope are disposed, Connections and Sessions closed.

A DBAPI connection made by a pool belongs to that pool, not to the scope: a module-level
Engine keeps its pooled connections across invocations (deliberate reuse). What the handler
leaves checked out is invalidated, so it is closed rather than handed back to a pool in an
unknown state.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from lambda_conn._integrations._track import tracker
from lambda_conn._kinds import Kind, register_kind
from lambda_conn._scope import _current

_POOL_SCOPE = "_lambda_conn_scope"  # id of the scope a pool was built in


class _OwnedEngine:
    """An Engine created inside a scope, with the connections checked out of its pool.

    The pool is disposed only if it was built in the same scope: an Engine made per
    invocation over a module-level ``pool=`` must leave that pool's connections alone.
    """

    __slots__ = ("checked_out", "engine", "owns_pool")

    def __init__(self, engine: Any, owns_pool: bool) -> None:
        self.engine = engine
        self.owns_pool = owns_pool
        self.checked_out: dict[int, Any] = {}

    def on_checkout(self, dbapi_conn: Any, record: Any, proxy: Any) -> None:
        self.checked_out[id(record)] = proxy

    def on_checkin(self, dbapi_conn: Any, record: Any) -> None:
        self.checked_out.pop(id(record), None)


def _close_engine(owned: _OwnedEngine) -> None:
    from sqlalchemy import event

    pool = owned.engine.pool
    try:
        for proxy in list(owned.checked_out.values()):
            if proxy.dbapi_connection is not None:
                proxy.invalidate()  # left checked out by this invocation
    finally:
        owned.checked_out.clear()
        for name, listener in (("checkout", owned.on_checkout), ("checkin", owned.on_checkin)):
            if event.contains(pool, name, listener):
                event.remove(pool, name, listener)
        if owned.owns_pool:
            owned.engine.dispose()


def _engine_is_open(owned: _OwnedEngine) -> bool:
    held = any(proxy.dbapi_connection is not None for proxy in owned.checked_out.values())
    return held or (owned.owns_pool and bool(owned.engine.pool.checkedin()))


def _engine_remote(owned: _OwnedEngine) -> list[str]:
    url = owned.engine.url
    return [f"{url.host}:{url.port}"] if url.host else [str(url.drivername)]


ENGINE = Kind(
    "sqlalchemy.Engine",
    "sqlalchemy",
    close=_close_engine,
    is_open=_engine_is_open,
    remote=_engine_remote,
)


def _close_connection(conn: Any) -> None:
    if conn.closed:
        return
    try:
        if not conn.invalidated:
            conn.invalidate()  # close the DBAPI connection; do not return it to a pool
    finally:
        conn.close()


CONNECTION = Kind(
    "sqlalchemy.Connection",
    "sqlalchemy",
    close=_close_connection,
    is_open=lambda conn: not conn.closed,
    remote=lambda conn: _engine_remote(_OwnedEngine(conn.engine, owns_pool=False)),
)


def _close_session(session: Any) -> None:
    if session.in_transaction():
        session.invalidate()
    else:
        session.close()


SESSION = Kind("sqlalchemy.orm.Session", "sqlalchemy", close=_close_session)


def _own_engine(engine: Any) -> _OwnedEngine:
    from sqlalchemy import event

    scope = _current.get()
    owned = _OwnedEngine(engine, owns_pool=engine.pool.__dict__.get(_POOL_SCOPE) == id(scope))
    event.listen(engine.pool, "checkout", owned.on_checkout)
    event.listen(engine.pool, "checkin", owned.on_checkin)
    return owned


def _mark_pool(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    wrapped(*args, **kwargs)
    scope = _current.get()
    if scope is not None:
        instance.__dict__[_POOL_SCOPE] = id(scope)


def _pool_made_connection(dbapi_conn: Any, record: Any) -> None:
    """A pool made a DBAPI connection: it belongs to the pool, not to the scope.

    Except where the pool itself was built in this scope and the scope does not track
    SQLAlchemy (``clients=["pymysql"]``): nothing would dispose that pool, so the driver's
    own tracking closes its connections. A module-level Engine's pool keeps them, whatever
    the scope tracks: closing them would break the next invocation's checkout.
    """
    scope = _current.get()
    if scope is None:
        return
    if not scope.tracks("sqlalchemy"):
        pool = getattr(record, "_ConnectionRecord__pool", None)
        if pool is not None and pool.__dict__.get(_POOL_SCOPE) == id(scope):
            return
    scope.forget(dbapi_conn)


def patch_engine(sqlalchemy: ModuleType) -> None:
    import wrapt
    from sqlalchemy import event
    from sqlalchemy.engine import base as module
    from sqlalchemy.pool import Pool
    from sqlalchemy.pool import base as pool_base

    wrapt.wrap_function_wrapper(
        module, "Engine.__init__", tracker("sqlalchemy", ENGINE, own=_own_engine)
    )
    wrapt.wrap_function_wrapper(module, "Connection.__init__", tracker("sqlalchemy", CONNECTION))
    event.listen(Pool, "connect", _pool_made_connection)
    wrapt.wrap_function_wrapper(pool_base, "Pool.__init__", _mark_pool)
    register_kind(_OwnedEngine, ENGINE)
    register_kind(module.Connection, CONNECTION)


def patch_session(orm: ModuleType) -> None:
    import wrapt
    from sqlalchemy.orm import session as module

    wrapt.wrap_function_wrapper(module, "Session.__init__", tracker("sqlalchemy", SESSION))
    register_kind(module.Session, SESSION)
