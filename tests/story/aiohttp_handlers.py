"""The story's leaky aiohttp handlers: a ClientSession per invocation, kept in a cache."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiohttp

HTTP_URL = os.environ.get("STORY_HTTP", "")
CACHE: list[Any] = []


async def session_per_call(event: dict[str, Any], context: Any) -> int:
    session = aiohttp.ClientSession()  # "closed later", never
    CACHE.append(session)
    async with session.get(HTTP_URL) as response:
        await response.read()
        return int(response.status)


def session_inside_asyncio_run(event: dict[str, Any], context: Any) -> int:
    """A sync handler running its async code with asyncio.run(): the session outlives the
    loop, so only closing its sockets directly can free them."""
    return asyncio.run(session_per_call(event, context))


async def connector_per_call(event: dict[str, Any], context: Any) -> int:
    """A TCPConnector per invocation, kept; the session on it is closed but does not own it,
    so the connector's keep-alive socket stays open."""
    connector = aiohttp.TCPConnector()
    CACHE.append(connector)
    async with (
        aiohttp.ClientSession(connector=connector, connector_owner=False) as session,
        session.get(HTTP_URL) as response,
    ):
        await response.read()
        return int(response.status)
