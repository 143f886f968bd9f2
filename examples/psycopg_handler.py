"""Quick start, PostgreSQL: open a connection per invocation and let lambda_conn close it.

Run it locally against any PostgreSQL:

    export DATABASE_URL="host=127.0.0.1 dbname=app user=app password=secret"
    python3 examples/psycopg_handler.py
"""

from __future__ import annotations

import os
from typing import Any

import psycopg

from lambda_conn import managed_connection

# A libpq connection string or URL, e.g. from the function's environment or a secret.
DATABASE_URL = os.environ.get("DATABASE_URL", "")


@managed_connection
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    conn = psycopg.connect(DATABASE_URL, connect_timeout=5)
    row = conn.execute("SELECT current_database(), pg_backend_pid()").fetchone()
    assert row is not None
    # No conn.close(): lambda_conn closes it when the handler returns or raises, with the
    # Terminate message, so the server ends the session (and rolls back what is open).
    return {"database": row[0], "backend_pid": row[1]}


if __name__ == "__main__":
    print(handler({}, None))
