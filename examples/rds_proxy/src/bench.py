"""The benchmark function: connect patterns timed from inside the VPC, against the proxy.

Invoke with ``{"repeat": 30}``. Each case is what one invocation pays to get a connection,
run ``SELECT 1`` and be done with it; the answer has the median and p99 in milliseconds and
the ratio of each median to the fastest. The same cases as ``benchmarks/run.py --dsn``,
which runs them from wherever you are (and against the private MariaDB by default).

The IAM token is the password for every case (signed once, then cached), so the cases
differ only in how they connect. Measuring stops early when the invocation has less than
``STOP_MARGIN_S`` seconds left.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import pymysql

from lambda_conn import RDSConnector, managed_connection, tls_context

HOST = os.environ["DB_HOST"]
PORT = int(os.environ.get("DB_PORT", "3306"))
USER = os.environ["DB_USER"]
DATABASE = os.environ["DB_NAME"]
CA = os.environ.get("DB_SSL_CA") or None  # None: the system trust store (RDS Proxy)
STOP_MARGIN_S = 5.0

rds = RDSConnector(HOST, port=PORT, user=USER, database=DATABASE, iam=True, ssl_ca=CA, verify=True)
kept = rds.reused(max_age=900)


def _select_one(conn: Any) -> None:
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchall()


def cases(context: Any) -> dict[str, Callable[[], None]]:
    assert rds.iam is not None
    token = rds.iam.token(HOST, PORT, USER)
    plain = {"host": HOST, "port": PORT, "user": USER, "password": token, "database": DATABASE}
    shared = tls_context(ca=CA, verify=True)

    def pymysql_new_context() -> None:
        # What PyMySQL does with TLS options: a new SSLContext (and CA store load) per connect
        conn = pymysql.connect(**plain, ssl_ca=CA, ssl_verify_cert=True, ssl_verify_identity=True)
        _select_one(conn)
        conn.close()

    def pymysql_shared_context() -> None:
        conn = pymysql.connect(**plain, ssl=shared)
        _select_one(conn)
        conn.close()

    @managed_connection
    def managed(event: Any, ctx: Any) -> None:
        _select_one(rds.connect(ctx))  # closed by the decorator

    @managed_connection
    def reused(event: Any, ctx: Any) -> None:
        _select_one(kept(ctx))  # checked once per invocation, kept open

    return {
        "PyMySQL, new SSLContext per connect": pymysql_new_context,
        "PyMySQL, shared SSLContext": pymysql_shared_context,
        "@managed_connection + RDSConnector.connect": lambda: managed({}, context),
        "reused connection, checked per invocation": lambda: reused({}, context),
    }


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    repeat = int(event.get("repeat", 30))
    samples: dict[str, list[float]] = {}
    for name, case in cases(context).items():
        case()  # warm up: the first call pays one-time costs (SSLContext, imports)
        taken = samples[name] = []
        for _ in range(repeat):
            if context.get_remaining_time_in_millis() < STOP_MARGIN_S * 1000:
                break
            start = time.perf_counter()
            case()
            taken.append((time.perf_counter() - start) * 1000)
    medians = {name: statistics.median(s) for name, s in samples.items() if s}
    fastest = min(medians.values(), default=1.0) or 1e-9
    return {
        "unit": "ms",
        "repeat": repeat,
        "cases": [
            {
                "case": name,
                "n": len(samples[name]),
                "median": round(median, 3),
                "p99": round(_p99(samples[name]), 3),
                "ratio": round(median / fastest, 2),
            }
            for name, median in medians.items()
        ],
    }
