"""The handlers ``lambda-conn demo`` soaks. Read them: they are the story.

The database comes from ``LAMBDA_CONN_DEMO_DSN`` (``mysql://user:password@host:port/db``,
add ``?ssl_ca=/path/ca.pem`` for verified TLS).

``demo`` runs the first three in one environment (descriptors run out). ``demo --fanout``
runs the same ``SELECT 1`` four ways in many environments at once against a server with a
small ``max_connections`` (connections run out): ``unprotected``, ``protected`` (closed
when each invocation ends), ``reused`` (one connection kept per environment) and
``rds_connector`` (closed per invocation, connects retried with backoff until the
invocation's time is up).
"""

from __future__ import annotations

import atexit
import functools
import os
import time
from typing import Any

import pymysql  # noqa: F401 - imported at Init, as a real function does

from lambda_conn import managed_connection, reused_connection
from lambda_conn.local._dsn import connect, parse_dsn


def _connect() -> Any:
    return connect_dsn(os.environ["LAMBDA_CONN_DEMO_DSN"])


def connect_dsn(dsn: str) -> Any:
    """A connection from ``mysql://user:password@host:port/db[?ssl_ca=...]`` (PyMySQL) or
    ``postgresql://...`` (psycopg): the one parser of lambda_conn/local/_dsn.py."""
    return connect(dsn)


def _select_one(conn: Any) -> int:
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1")
        return int(cursor.fetchone()[0])


def _query(conn: Any, event: Any) -> dict[str, int]:
    """SELECT 1, then the request's other work with the connection held: ``hold_ms`` in
    the event (the fan-out demo's), none otherwise."""
    value = _select_one(conn)
    hold_ms = event.get("hold_ms") if isinstance(event, dict) else None
    if hold_ms:
        time.sleep(hold_ms / 1000)
    return {"value": value}


def unprotected(event: Any, context: Any) -> dict[str, int]:
    """Opens a connection per request and "cleans up" with atexit: one socket per request."""
    conn = _connect()
    atexit.register(conn.close)  # runs only when the process exits; keeps conn alive
    return _query(conn, event)


@managed_connection
def protected(event: Any, context: Any) -> dict[str, int]:
    """The same code, with the decorator: closed when the handler returns."""
    conn = _connect()
    atexit.register(conn.close)
    return _query(conn, event)


_HANDLES: list[Any] = []


@managed_connection
def third_party_leak(event: Any, context: Any) -> dict[str, int]:
    """A leak no library can close (a third-party handle kept forever); the health guard,
    switched on by FD_HEALTH_LIMIT, recycles the container after a response instead."""
    conn = _connect()
    _HANDLES.append(open(os.devnull, "rb"))  # noqa: SIM115 - the leak is the point
    return {"value": _select_one(conn)}


# --- demo --fanout: the same SELECT 1 in many environments at once -------------------

_kept = reused_connection(_connect)


@managed_connection
def reused(event: Any, context: Any) -> dict[str, int]:
    """One connection per environment, kept across invocations (validated each time): every
    environment holds one, busy or idle, for as long as it lives."""
    return _query(_kept(), event)


@functools.cache
def _rds() -> Any:
    from lambda_conn import RDSConnector, Retry

    dsn = parse_dsn(os.environ["LAMBDA_CONN_DEMO_DSN"])
    return RDSConnector(
        dsn.host,
        port=dsn.port,
        user=dsn.user,
        password=dsn.password,
        database=dsn.database,
        tls="ssl_ca" in dsn.query,
        ssl_ca=dsn.query.get("ssl_ca"),
        # Until the invocation's time is up (the deadline bounds every sequence), not the
        # default 6 attempts (about 0.8 s of backoff): a fan-out's overload lasts as long
        # as the burst, and a request that waits 1 s for a slot still answers.
        retry=Retry(attempts=100, max_delay=0.2),
    )


@managed_connection
def rds_connector(event: Any, context: Any) -> dict[str, int]:
    """Per invocation like ``protected``, through RDSConnector: a connect refused with
    "too many connections" is retried with jittered backoff within the time left."""
    return _query(_rds().connect(context), event)
