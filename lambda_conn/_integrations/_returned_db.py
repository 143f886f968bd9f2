"""Unbuffered database results returned from a scope (see ``lambda_conn._returned``), and
the clear error for one the scope had to cut.

A PyMySQL ``SSCursor`` (or ``SSDictCursor``) and a SQLAlchemy result read with
``stream_results`` fetch their rows from the connection as the caller iterates: the
connection leaves the scope with them, and is closed once the last row has been read or the
cursor/result closed.
"""

from __future__ import annotations

from lambda_conn._errors import ClosedByScopeError
from lambda_conn._returned import Hold, subclass, tracked

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from lambda_conn._returned import Need
    from lambda_conn._scope import Scope

_HOLD = "_lambda_conn_hold"  # on a cursor or result whose connection it holds

# --------------------------------------------------------------------------- PyMySQL


def unread_result(conn: Any) -> bool:
    """Whether a PyMySQL connection is in the middle of an unbuffered result."""
    result = conn._result
    return result is not None and bool(result.unbuffered_active)


def cut(conn: Any) -> None:
    """After the scope closed ``conn`` under an unbuffered result: reading the rest raises
    ``ClosedByScopeError`` (PyMySQL would fail with "'NoneType' object has no attribute
    'read'"), every time; closing the cursor stays quiet."""
    result = conn._result
    result.__class__ = subclass(type(result), "cut", _cut_methods)
    result.__dict__[_WHAT] = f"unbuffered PyMySQL result from {conn.host}:{conn.port}"
    from lambda_conn._log import WARNING, log_event

    log_event(
        WARNING,
        "closed_under_returned_object",
        kind="pymysql unbuffered result",
        remote=[f"{conn.host}:{conn.port}"],
    )


_WHAT = "_lambda_conn_cut"


def _cut_methods(cls: type) -> dict[str, Any]:
    def read_rows(self: Any) -> Any:
        raise ClosedByScopeError(
            f"the connection behind this {self.__dict__[_WHAT]} was closed when its "
            "@managed_connection scope ended (the end of the invocation), before every row "
            "was read: read the rows inside the scope, or return the cursor or result from "
            "the decorated function, which keeps its connection open until the last row is "
            "read or it is closed"
        )

    def finish(self: Any) -> None:
        self.unbuffered_active = False  # nothing left to drain: the connection is gone

    return {"_read_rowdata_packet_unbuffered": read_rows, "_finish_unbuffered_query": finish}


def pymysql_cursor(cursor: Any) -> Need | None:
    conn, result = cursor.connection, cursor._result
    if conn is None or result is None or result is not conn._result or not unread_result(conn):
        return None  # read to the end already
    return cursor, lambda scope: _hold_pymysql(scope, cursor, conn)


def _hold_pymysql(scope: Scope, cursor: Any, conn: Any) -> Hold | None:
    if conn not in scope:
        return None  # a reused or module-level connection: not this scope's to close
    from lambda_conn._integrations._pymysql import PYMYSQL

    scope.forget(conn)

    def close(cut: bool) -> None:
        if not cut and conn._result is not None:
            conn._result.unbuffered_active = False  # consumed or dropped: nobody reads on
        PYMYSQL.close(conn)  # type: ignore[misc]

    hold = Hold(
        "pymysql unbuffered cursor",
        close,
        lambda: conn._sock is not None,
        [f"{conn.host}:{conn.port}"],
    )
    cursor.__dict__[_HOLD] = hold
    cursor.__class__ = subclass(type(cursor), "releasing", _releasing_cursor)
    return hold


def _releasing_cursor(cls: Any) -> dict[str, Any]:
    """Methods that close the handed-over connection after the last row or on close()."""

    def read_next(self: Any) -> Any:
        row = cls.read_next(self)
        if row is None and not self._result.has_next:
            self.__dict__[_HOLD].release(cut=False)
        return row

    def close(self: Any) -> None:
        try:
            cls.close(self)
        finally:
            self.__dict__[_HOLD].release(cut=False)

    return {"read_next": read_next, "close": close}


# --------------------------------------------------------------------------- SQLAlchemy


def sqlalchemy_filter_result(result: Any) -> Need | None:
    """``result.scalars()``, ``.mappings()``: what they read from is the cursor result."""
    real = getattr(result, "_real_result", None)
    return sqlalchemy_result(real) if real is not None else None


def sqlalchemy_result(result: Any) -> Need | None:
    from sqlalchemy.engine import CursorResult

    if not isinstance(result, CursorResult) or result._soft_closed:
        return None
    if not result.context._is_server_side:
        return None  # buffered: every row is in the client already
    conn, cursor = result.connection, result.cursor
    return cursor, lambda scope: _hold_sqlalchemy(scope, result, conn)


def _hold_sqlalchemy(scope: Scope, result: Any, conn: Any) -> Hold | None:
    if conn not in scope:
        return None
    from lambda_conn._integrations._sqlalchemy import CONNECTION, _OwnedPool

    scope.forget(conn)
    record = getattr(conn._dbapi_connection, "_connection_record", None)
    dbapi = getattr(conn._dbapi_connection, "dbapi_connection", None)
    for owned in tracked(scope):  # the Engine's bookkeeping would invalidate it
        if isinstance(owned, _OwnedPool):
            owned.hand_over(record, dbapi)

    def close(cut_now: bool) -> None:
        if not cut_now and dbapi is not None and _is_pymysql(dbapi) and dbapi._result:
            dbapi._result.unbuffered_active = False  # consumed or dropped: nobody reads on
        CONNECTION.close(conn)  # type: ignore[misc]  # cuts what is still unread

    hold = Hold("sqlalchemy streamed result", close, lambda: not conn.closed, _remote(conn))
    result.__dict__[_HOLD] = hold
    result.__class__ = subclass(type(result), "releasing", _releasing_result)
    return hold


def unread_driver_connection(conn: Any) -> Any:
    """The PyMySQL connection under a SQLAlchemy Connection in the middle of a streamed
    (unbuffered) result, or None."""
    dbapi = getattr(conn._dbapi_connection, "dbapi_connection", None)
    if dbapi is not None and _is_pymysql(dbapi) and unread_result(dbapi):
        return dbapi
    return None


def _is_pymysql(dbapi: Any) -> bool:
    return type(dbapi).__module__.startswith("pymysql")


def _remote(conn: Any) -> list[str]:
    url = conn.engine.url
    return [f"{url.host}:{url.port}"] if url.host else [str(url.drivername)]


def _releasing_result(cls: Any) -> dict[str, Any]:
    """``_soft_close``, run once the result is exhausted or closed, closes the Connection."""

    def _soft_close(self: Any, hard: bool = False) -> None:
        try:
            cls._soft_close(self, hard)
        finally:
            if self._soft_closed:
                self.__dict__[_HOLD].release(cut=False)

    return {"_soft_close": _soft_close}
