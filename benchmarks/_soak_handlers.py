"""Handlers soaked by benchmarks/run.py under the local runtime (one environment each).

Configured by the environment the benchmark passes: DB_HOST, DB_PORT, DB_USER,
DB_PASSWORD (or DB_IAM=1 and DB_REGION), DB_NAME, DB_SSL_CA, DB_VERIFY.
"""

from __future__ import annotations

import os
from typing import Any

from lambda_conn import managed_connection
from lambda_conn._rds.connector import RDSConnector

rds = RDSConnector(
    os.environ["DB_HOST"],
    port=int(os.environ["DB_PORT"]),
    user=os.environ["DB_USER"],
    password=os.environ.get("DB_PASSWORD") or None,
    database=os.environ.get("DB_NAME") or None,
    iam=os.environ.get("DB_IAM") == "1",
    region=os.environ.get("DB_REGION") or None,
    ssl_ca=os.environ.get("DB_SSL_CA") or None,
    verify=os.environ.get("DB_VERIFY") == "1",
)
kept = rds.reused(max_age=900)


def _select_one(conn: Any) -> int:
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1")
        return int(cursor.fetchone()[0])


def bare(event: Any, context: Any) -> int:
    """No database: what the runtime loop and the freeze cost per invocation."""
    return 1


@managed_connection
def per_invocation(event: Any, context: Any) -> int:
    """Connect (deadline from the context), query; the decorator closes the connection."""
    return _select_one(rds.connect(context))


@managed_connection
def reused(event: Any, context: Any) -> int:
    """One connection for the environment, checked once per invocation."""
    return _select_one(kept(context))
