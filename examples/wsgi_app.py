"""A WSGI app with one lambda_conn scope per request (PEP 3333, no framework needed).

With Flask: ``app.wsgi_app = ManagedConnectionWSGIMiddleware(app.wsgi_app)``. On Lambda,
any WSGI adapter that calls the body's ``close()`` (as PEP 3333 requires) works; the scope
also closes as soon as the body is exhausted.

Run it locally:

    export DATABASE_URL="host=127.0.0.1 dbname=app user=app password=secret"
    python3 examples/wsgi_app.py
    curl http://127.0.0.1:8000/
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import psycopg

from lambda_conn.middleware import ManagedConnectionWSGIMiddleware

DATABASE_URL = os.environ.get("DATABASE_URL", "")


def rows(start_response: Callable[..., Any]) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    conn = psycopg.connect(DATABASE_URL, connect_timeout=5)
    for (n,) in conn.execute("SELECT generate_series(1, 5)"):
        yield f"{n}\n".encode()  # the body runs after the app returned: still tracked


def simple_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    return rows(start_response)


app = ManagedConnectionWSGIMiddleware(simple_app)


if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    with make_server("127.0.0.1", 8000, app) as server:
        print("serving on http://127.0.0.1:8000/")
        server.serve_forever()
