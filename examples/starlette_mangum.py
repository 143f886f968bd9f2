"""An ASGI app on Lambda through Mangum, one lambda_conn scope per request.

FastAPI is Starlette underneath: ``app.add_middleware(ManagedConnectionASGIMiddleware)``
is the same call on a ``FastAPI()`` app. Decorating the Mangum handler as well adds the
per-invocation scope and the health guard (FD_HEALTH_LIMIT, ...) after each invocation.

Run it locally as a web server instead (``pip install uvicorn``):

    DATABASE_URL="host=127.0.0.1 dbname=app user=app password=secret" \
    uvicorn examples.starlette_mangum:app
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import psycopg
from mangum import Mangum
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from lambda_conn import managed_connection
from lambda_conn.middleware import ManagedConnectionASGIMiddleware

DATABASE_URL = os.environ.get("DATABASE_URL", "")


async def backend(request: Request) -> JSONResponse:
    conn = await psycopg.AsyncConnection.connect(DATABASE_URL, connect_timeout=5)
    cur = await conn.execute("SELECT pg_backend_pid()")
    row = await cur.fetchone()
    return JSONResponse({"backend_pid": row[0] if row else None})  # conn closed after this


def report(request: Request) -> JSONResponse:  # sync routes run in a thread: tracked too
    conn = psycopg.connect(DATABASE_URL, connect_timeout=5)
    row = conn.execute("SELECT count(*) FROM pg_stat_activity").fetchone()
    return JSONResponse({"sessions": row[0] if row else 0})


async def numbers(request: Request) -> StreamingResponse:
    async def rows() -> AsyncIterator[bytes]:
        conn = await psycopg.AsyncConnection.connect(DATABASE_URL, connect_timeout=5)
        cur = await conn.execute("SELECT generate_series(1, 5)")
        async for (n,) in cur:
            yield f"{n}\n".encode()

    # the connection stays open while the body streams, and is closed after the last chunk
    return StreamingResponse(rows(), media_type="text/plain")


app = Starlette(
    routes=[Route("/backend", backend), Route("/report", report), Route("/numbers", numbers)],
    middleware=[Middleware(ManagedConnectionASGIMiddleware)],
)

handler = managed_connection(Mangum(app, lifespan="off"))
