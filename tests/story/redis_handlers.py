"""The story's leaky redis-py handler: a client (and its own pool) per invocation, kept."""

from __future__ import annotations

import os
from typing import Any

import redis

REDIS_URL = os.environ.get("STORY_REDIS", "")
CACHE: list[Any] = []


def client_per_call(event: dict[str, Any], context: Any) -> bool:
    client = redis.Redis.from_url(REDIS_URL)
    CACHE.append(client)
    return bool(client.ping())
