"""The story's leaky boto3 handler: a client per invocation (each with its own urllib3
pool), kept. The endpoint is a loopback HTTP server (SQS's JSON protocol accepts its JSON
answer as an empty ListQueues result); dummy keys, never AWS."""

from __future__ import annotations

import os
from typing import Any

import boto3

AWS_URL = os.environ.get("STORY_AWS", "")
CACHE: list[Any] = []


def client_per_call(event: dict[str, Any], context: Any) -> int:
    sqs = boto3.client(
        "sqs",
        endpoint_url=AWS_URL,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    CACHE.append(sqs)
    return int(sqs.list_queues()["ResponseMetadata"]["HTTPStatusCode"])
