"""SQLAlchemy 2.x: Engines built in a scope are disposed, Connections and Sessions closed.

A DBAPI connection made by a pool belongs to that pool, not to the scope: a module-level
Engine keeps its pooled connections across invocations (deliberate reuse). What the handler
leaves checked out is invalidated, so it is closed rather than handed back to a pool in an
unknown state.
"""

from __future__ import annotations

import sys

from lambda_conn._integrations._returned_db import cut, unread_driver_connection
from lambda_conn._integrations._track import tracker
from lambda_conn._kinds import Kind, kind_of, reconnects, register_kind
from lambda_conn._registry import Integration
from lambda_conn._scope import _current, untracked

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from types import ModuleType
    from typing import Any

_POOL_SCOPE = "_lambda_conn_scope"  # serial of the scope a pool was built in
# Clients whose connections a pool may hold.
_DRIVERS = (
    "pymysql",
    "psycopg",
    "psycopg2",
    "asyncpg",
    "mysqlclient",
    "mysql-connector",
    "aiomysql",
)


class _OwnedPool:
    """A pool the scope answers for, with the connections checked out of it meanwhile.

    ``dispose`` is how its checked-in connections are closed at the end of the scope, or
    None when the pool is not the scope's: an Engine made per invocation over a
    module-level ``pool=`` must leave that pool's connections alone.

    ``engine.dispose()`` in the handler puts a new pool in place of the old one, while a
    connection checked out of the old one still goes back there: every pool the Engine
    had during the scope is followed, and whether anything leaked is decided by the DBAPI
    connections still open, not by pool slots (a disposed pool's empty records).
    """

    __slots__ = ("checked_out", "dispose", "engine", "made", "pool", "pools", "url")

    def __init__(
        self,
        pool: Any,
        dispose: Callable[[], Any] | None,
        url: Any = None,
        engine: Any = None,
    ) -> None:
        from sqlalchemy import event

        self.pool = pool
        self.dispose = dispose
        self.url = url
        self.engine = engine
        self.checked_out: dict[int, Any] = {}
        self.made: dict[int, Any] = {}  # DBAPI connections our pools opened (ours to close)
        self.pools: list[Any] = []
        self._follow(pool)
        if engine is not None:
            event.listen(engine, "engine_disposed", self.on_engine_disposed)

    def _follow(self, pool: Any) -> None:
        from sqlalchemy import event

        self.pools.append(pool)
        event.listen(pool, "checkout", self.on_checkout)
        event.listen(pool, "checkin", self.on_checkin)
        if self.dispose is not None:
            event.listen(pool, "connect", self.on_connect)

    def on_checkout(self, dbapi_conn: Any, record: Any, proxy: Any) -> None:
        self.checked_out[id(record)] = proxy

    def on_checkin(self, dbapi_conn: Any, record: Any) -> None:
        self.checked_out.pop(id(record), None)

    def on_connect(self, dbapi_conn: Any, record: Any) -> None:
        self.made[id(dbapi_conn)] = dbapi_conn

    def hand_over(self, record: Any, dbapi_conn: Any) -> None:
        """A returned streamed result takes this checked-out connection with it: no longer
        this pool's to invalidate or report (lambda_conn._returned)."""
        self.checked_out.pop(id(record), None)
        self.made.pop(id(dbapi_conn), None)

    def on_engine_disposed(self, engine: Any) -> None:
        # The old pool closed its idle connections; what is checked out of it comes back
        # to it and is closed when the scope disposes it. Follow the new one too.
        self.pool = engine.pool
        self._follow(engine.pool)

    def unlisten(self) -> None:
        from sqlalchemy import event

        on_pool: list[tuple[str, Callable[..., Any]]] = [
            ("checkout", self.on_checkout),
            ("checkin", self.on_checkin),
            ("connect", self.on_connect),
        ]
        targets: list[tuple[Any, list[tuple[str, Callable[..., Any]]]]] = [
            (pool, on_pool) for pool in self.pools
        ]
        if self.engine is not None:
            targets.append((self.engine, [("engine_disposed", self.on_engine_disposed)]))
        for target, listeners in targets:
            for name, listener in listeners:
                if event.contains(target, name, listener):
                    event.remove(target, name, listener)


def _close_owned(owned: _OwnedPool) -> None:
    try:
        for proxy in list(owned.checked_out.values()):
            if proxy.dbapi_connection is not None:
                proxy.invalidate()  # left checked out by this invocation
    finally:
        owned.checked_out.clear()
        owned.unlisten()
        if owned.dispose is not None:
            for replaced in owned.pools[:-1]:  # pools a mid-scope engine.dispose() replaced
                replaced.dispose()
            owned.dispose()


def _live(dbapi_conn: Any) -> bool:
    if dbapi_conn is None:
        return False
    # Under an async dialect the pool holds SQLAlchemy's adapter: ask the driver's own.
    dbapi_conn = getattr(dbapi_conn, "driver_connection", dbapi_conn)
    try:
        return bool(kind_of(dbapi_conn).is_open(dbapi_conn))
    except Exception:
        return False


def _owned_is_open(owned: _OwnedPool) -> bool:
    """Decided by live DBAPI connections: held by this invocation, or opened by a pool of
    ours and not closed; never by a pool's slot count."""
    if any(_live(proxy.dbapi_connection) for proxy in owned.checked_out.values()):
        return True
    return any(_live(conn) for conn in owned.made.values())


def _url_remote(url: Any) -> list[str]:
    if url is None:
        return []
    return [f"{url.host}:{url.port}"] if url.host else [str(url.drivername)]


def _in_greenlet(
    close: Callable[[Any], None], is_async: Callable[[Any], bool]
) -> Callable[[Any], Awaitable[None]]:
    """``aclose`` for an async scope: under an async dialect (asyncpg, aiomysql) closing
    awaits the driver, which SQLAlchemy allows only inside ``greenlet_spawn`` (called
    directly, every close fails with MissingGreenlet and the connections stay open)."""

    async def aclose(obj: Any) -> None:
        if is_async(obj):
            from sqlalchemy.util import greenlet_spawn

            await greenlet_spawn(close, obj)
        else:
            close(obj)

    return aclose


def _pool_is_async(owned: _OwnedPool) -> bool:
    return bool(getattr(getattr(owned.pool, "_dialect", None), "is_async", False))


ENGINE = Kind(
    "sqlalchemy.Engine",
    "sqlalchemy",
    close=_close_owned,
    aclose=_in_greenlet(_close_owned, _pool_is_async),
    is_open=_owned_is_open,
    remote=lambda owned: _url_remote(owned.url),
    alive=reconnects,  # the pool's own pre-ping and invalidation
)
# A pool built in a scope that does not track SQLAlchemy (``clients=["pymysql"]``): the
# scope disposes it rather than closing its driver connections under it.
POOL = Kind(
    "sqlalchemy.Pool",
    "sqlalchemy",
    close=_close_owned,
    aclose=_in_greenlet(_close_owned, _pool_is_async),
    is_open=_owned_is_open,
)


def _close_connection(conn: Any) -> None:
    if conn.closed:
        return
    unread = unread_driver_connection(conn)  # under a streamed result: it must fail clearly
    try:
        if not conn.invalidated:
            conn.invalidate()  # close the DBAPI connection; do not return it to a pool
    finally:
        conn.close()
        if unread is not None and not unread.open:  # closed here, not just let go
            cut(unread)


CONNECTION = Kind(
    "sqlalchemy.Connection",
    "sqlalchemy",
    close=_close_connection,
    aclose=_in_greenlet(_close_connection, lambda conn: bool(conn.dialect.is_async)),
    is_open=lambda conn: not conn.closed,
    remote=lambda conn: _url_remote(conn.engine.url),
)


def _close_session(session: Any) -> None:
    if not session.in_transaction():
        session.close()
        return
    from sqlalchemy.exc import ResourceClosedError

    try:
        session.invalidate()
    except ResourceClosedError:
        # Its Connection was tracked too, newer, so closed (invalidated) first: what is
        # left is the Session's own state, which close() releases.
        session.close()


def _maybe_async_session(session: Any) -> bool:
    # An AsyncSession's sync Session may be bound to engines through several routes
    # (bind, binds, get_bind overrides); closing in a greenlet is right for sync ones too.
    return "sqlalchemy.ext.asyncio" in sys.modules


SESSION = Kind(
    "sqlalchemy.orm.Session",
    "sqlalchemy",
    close=_close_session,
    aclose=_in_greenlet(_close_session, _maybe_async_session),
    alive=reconnects,
)


def _own_engine(engine: Any) -> _OwnedPool:
    scope = _current.get()
    built_here = scope is not None and engine.pool.__dict__.get(_POOL_SCOPE) == scope.serial
    return _OwnedPool(engine.pool, engine.dispose if built_here else None, engine.url, engine)


def _mark_pool(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """A pool built in a scope is that scope's: its Engine disposes it, or, where the
    scope does not track SQLAlchemy (``clients=["pymysql"]``), the scope itself does."""
    wrapped(*args, **kwargs)
    scope = _current.get()
    if scope is not None:
        instance.__dict__[_POOL_SCOPE] = scope.serial
        if not scope.tracks("sqlalchemy") and any(map(scope.tracks, _DRIVERS)):
            scope.register(_OwnedPool(instance, instance.dispose), POOL)


def _pool_made_connection(dbapi_conn: Any, record: Any) -> None:
    """A pool made a DBAPI connection: it belongs to the pool, not to the scope.

    The driver's own tracking would close it under the pool, and the next checkout of a
    module-level (or lazily built, global) Engine would get a dead connection; what was
    built in the scope is disposed with its pool instead.
    """
    scope = _current.get()
    if scope is not None:
        scope.forget(dbapi_conn)
        # Under an async dialect (asyncpg, aiomysql) the pool holds an adapter; the
        # driver's tracking registered the driver connection inside it.
        driver_conn = getattr(record, "driver_connection", None)
        if driver_conn is not None and driver_conn is not dbapi_conn:
            scope.forget(driver_conn)


def _pool_connect(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """A pool connecting from the context of a closed scope: the connection is the pool's,
    so the driver's tracking must not report it as opened after the scope closed (the
    ``connect`` event that forgets it comes only after the driver registered it)."""
    scope = _current.get()
    if scope is None or not scope.closed:
        return wrapped(*args, **kwargs)
    with untracked():
        return wrapped(*args, **kwargs)


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
    # Every DBAPI connection a pool makes (first checkout and reconnects) goes through it.
    record = pool_base._ConnectionRecord
    if hasattr(record, "_ConnectionRecord__connect"):
        wrapt.wrap_function_wrapper(record, "_ConnectionRecord__connect", _pool_connect)
    register_kind(_OwnedPool, ENGINE)
    register_kind(module.Connection, CONNECTION)


def patch_session(orm: ModuleType) -> None:
    import wrapt
    from sqlalchemy.orm import session as module

    wrapt.wrap_function_wrapper(module, "Session.__init__", tracker("sqlalchemy", SESSION))
    register_kind(module.Session, SESSION)


INTEGRATION = Integration(
    "sqlalchemy", hooks={"sqlalchemy": patch_engine, "sqlalchemy.orm": patch_session}
)
