"""Behind RDS Proxy: one connection per execution environment, reused across invocations.

The proxy pools the database connections; the function keeps one client connection for
the life of its environment instead of a TLS handshake and a login per request.

- ``reused_connection`` opens it outside any invocation scope, so @managed_connection never
  sweeps it, checks it before each invocation's first use (a thawed environment's socket
  may have been closed by the proxy while it was frozen: IdleClientTimeout, 30 minutes by
  default) and replaces it when older than ``max_age``.
- ``prepare_threshold=None``: psycopg otherwise prepares a statement on the server after 5
  executions, and prepared statements pin the client to one database connection on the
  proxy (no more multiplexing).
- ``autocommit=True``: a transaction left open would pin it too, and hold locks between
  invocations while the environment is frozen.
"""

from __future__ import annotations

import os
from typing import Any

import psycopg

from lambda_conn import managed_connection, reused_connection

DATABASE_URL = os.environ.get("DATABASE_URL", "")  # the proxy's endpoint


# The default check polls the idle socket (readable means the proxy closed it); psycopg's
# own ``closed`` flag would stay False until a query failed.
@reused_connection(max_age=900)
def db() -> psycopg.Connection[Any]:
    return psycopg.connect(DATABASE_URL, connect_timeout=5, autocommit=True, prepare_threshold=None)


@managed_connection
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    row = db().execute("SELECT pg_backend_pid()").fetchone()  # db(): a live connection
    return {"backend_pid": row[0] if row else None}


if __name__ == "__main__":
    print(handler({}, None))
    print(handler({}, None))  # the same connection, checked and reused
