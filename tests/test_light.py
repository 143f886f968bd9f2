"""Closed means light: a kept reference to a closed connection costs at most 64 KB.

Each client is measured in a fresh subprocess (RSS is per process, and other tests'
allocations would blur it): 200 protected invocations that keep every client they open in
a list, after 10 to warm up. Before, a PyMySQL connection with PyMySQL's defaults and an
httpx client each kept ~0.8 MB (their TLS context) once closed. A closed client stays safe
to touch: closing it again and using it behave as the client's own closed object does.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pymysql
import pytest
import requests

from lambda_conn import managed_connection

LIMIT_KB = 64
ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import asyncio, gc, json, os, sys
from lambda_conn import managed_connection

client, target = sys.argv[1], json.loads(sys.argv[2])
kept = []


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


if client == "pymysql":
    import pymysql

    @managed_connection
    def handler(event, context):
        conn = pymysql.connect(**target)  # PyMySQL's defaults: opportunistic TLS
        kept.append(conn)
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
elif client == "requests":
    import requests

    @managed_connection
    def handler(event, context):
        session = requests.Session()
        kept.append(session)
        session.get(target, timeout=5)
elif client == "httpx":
    import httpx

    @managed_connection
    def handler(event, context):
        http = httpx.Client()
        kept.append(http)
        http.get(target)
else:
    import httpx

    @managed_connection
    async def main():
        http = httpx.AsyncClient()
        kept.append(http)
        await http.get(target)

    loop = asyncio.new_event_loop()

    def handler(event, context):
        loop.run_until_complete(main())

for _ in range(10):
    handler({}, None)
gc.collect()
before = rss()
for _ in range(200):
    handler({}, None)
gc.collect()
print(json.dumps({"kb_per_invocation": (rss() - before) / 200 / 1024, "kept": len(kept)}))
"""


def _defaults(mariadb: Any) -> dict[str, Any]:
    """Only what a connection needs to log in: everything else is PyMySQL's default."""
    kwargs = mariadb.connect_kwargs()
    return {key: kwargs[key] for key in ("host", "port", "user", "password", "database")}


@pytest.mark.parametrize("client", ["pymysql", "requests", "httpx", "httpx.AsyncClient"])
def test_kept_closed_clients_cost_at_most_64_kb_each(
    client: str, request: pytest.FixtureRequest
) -> None:
    if client == "pymysql":
        target: Any = _defaults(request.getfixturevalue("mariadb"))
    else:
        target = request.getfixturevalue("http_server").url
    out = subprocess.run(
        [sys.executable, "-c", CHILD, client, json.dumps(target)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        cwd=ROOT,
    )
    result = json.loads(out.stdout)
    assert result["kept"] == 210
    print(f"{client}: {result['kb_per_invocation']:.1f} KB per invocation")  # for the notes
    assert result["kb_per_invocation"] <= LIMIT_KB


def test_a_closed_pymysql_connection_stays_pymysqls_closed_connection(mariadb: Any) -> None:
    kept: list[Any] = []

    @managed_connection
    def handler() -> None:
        kept.append(pymysql.connect(**_defaults(mariadb)))

    handler()
    conn = kept[0]
    assert not conn.open
    with pytest.raises(pymysql.err.Error, match="Already closed"):
        conn.close()  # PyMySQL's own answer to a second close
    with pytest.raises(pymysql.err.InterfaceError):
        conn.cursor().execute("SELECT 1")
    conn.connect()  # PyMySQL reopens a closed connection: still with TLS
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)
        assert conn.ctx is not None and conn.ssl
    finally:
        conn.close()


def test_a_closed_httpx_client_refuses_like_a_closed_client(http_server: Any) -> None:
    kept: list[Any] = []

    @managed_connection
    def handler() -> int:
        client = httpx.Client()
        kept.append(client)
        return client.get(http_server.url).status_code

    assert handler() == 200
    client = kept[0]
    client.close()  # a no-op
    assert client.is_closed
    with pytest.raises(RuntimeError, match="client has been closed"):
        client.get(http_server.url)
    with pytest.raises(RuntimeError, match="Cannot reopen a client"):
        client.__enter__()
    assert http_server.wait_open(0) == 0


def test_a_closed_httpx_async_client_refuses_like_a_closed_client(http_server: Any) -> None:
    kept: list[Any] = []

    @managed_connection
    async def handler() -> int:
        client = httpx.AsyncClient()
        kept.append(client)
        return (await client.get(http_server.url)).status_code

    async def main() -> None:
        assert await handler() == 200
        client = kept[0]
        await client.aclose()  # a no-op
        with pytest.raises(RuntimeError, match="client has been closed"):
            await client.get(http_server.url)

    asyncio.run(main())
    assert http_server.wait_open(0) == 0


def test_a_closed_requests_session_is_still_a_session(http_server: Any) -> None:
    kept: list[Any] = []

    @managed_connection
    def handler() -> int:
        session = requests.Session()
        kept.append(session)
        return session.get(http_server.url, timeout=5).status_code

    assert handler() == 200
    assert http_server.wait_open(0) == 0
    session = kept[0]
    session.close()  # a no-op
    assert session.get(http_server.url, timeout=5).status_code == 200  # requests reopens
    session.close()
