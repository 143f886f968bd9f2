"""The story's leaky redis-py handlers: a client or pool (sync or asyncio) per invocation, kept."""

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


def pool_per_call(event: dict[str, Any], context: Any) -> bool:
    """A ConnectionPool per invocation, kept; the client on it is dropped."""
    pool = redis.ConnectionPool.from_url(REDIS_URL)
    CACHE.append(pool)
    return bool(redis.Redis(connection_pool=pool).ping())


async def asyncio_client_per_call(event: dict[str, Any], context: Any) -> bool:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(REDIS_URL)
    CACHE.append(client)
    return bool(await client.ping())


async def asyncio_pool_per_call(event: dict[str, Any], context: Any) -> bool:
    """A redis.asyncio ConnectionPool per invocation, kept; the client on it is dropped."""
    import redis.asyncio

    pool = redis.asyncio.ConnectionPool.from_url(REDIS_URL)
    CACHE.append(pool)
    return bool(await redis.asyncio.Redis(connection_pool=pool).ping())
