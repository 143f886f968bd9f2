"""Powertools for AWS Lambda and lambda_conn on one handler.

@managed_connection goes directly above the function: Powertools' Tracer segment and
Metrics flush then include the cleanup, and the Logger's Lambda context is in place for
the handler. The other order works too (both are tested). lambda_conn's own metrics, such
as the health guard's, go through Powertools here, with namespace ``lambda_conn``.

Run it locally (the Tracer needs ``aws-lambda-powertools[tracer]``; it is disabled outside
Lambda anyway):

    DATABASE_URL="host=127.0.0.1 dbname=app user=app password=secret" \
    POWERTOOLS_TRACE_DISABLED=true python3 examples/powertools_handler.py
"""

from __future__ import annotations

import os
from typing import Any

import psycopg
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

from lambda_conn import managed_connection

DATABASE_URL = os.environ.get("DATABASE_URL", "")

logger = Logger(service="orders")
metrics = Metrics(namespace="Shop", service="orders")
tracer = Tracer(service="orders")


@tracer.capture_lambda_handler
@logger.inject_lambda_context
@metrics.log_metrics
@managed_connection
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    conn = psycopg.connect(DATABASE_URL, connect_timeout=5)
    row = conn.execute("SELECT count(*) FROM pg_stat_activity").fetchone()
    sessions = row[0] if row else 0
    logger.info("sessions counted", extra={"sessions": sessions})
    metrics.add_metric(name="SessionsSeen", unit=MetricUnit.Count, value=sessions)
    return {"statusCode": 200, "sessions": sessions}


if __name__ == "__main__":

    class Context:  # what Powertools reads from the Lambda context
        function_name = "orders"
        memory_limit_in_mb = 512
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:orders"
        aws_request_id = "00000000-0000-4000-8000-000000000000"

    print(handler({}, Context()))
