"""The README's story, for real: 1,500 invocations in a process limited to 1,024 descriptors.

Without the decorator each leaky handler must fail (EMFILE or too many connections): that
proves the test can fail. With it, all 1,500 succeed, the descriptor count is back at its
baseline after every invocation, and the server sees no session left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

RUNNER = Path(__file__).parent / "story" / "run_story.py"
INVOCATIONS = 1500
LEAKY = ["pymysql_atexit", "mysql_and_http_cached", "sqlalchemy_engine_per_call"]


def run_story(
    handler: str, mode: str, mariadb: Any, http_server: Any, check_server: Any = None
) -> dict[str, Any]:
    env = {
        "STORY_DB": json.dumps(mariadb.connect_kwargs()),
        "STORY_HTTP": http_server.url,
        "STORY_SA_URL": mariadb.url(ssl_disabled="true"),  # no 30 ms TLS context per connect
    }
    return run_story_with(handler, mode, env, check_server)


def run_story_with(
    handler: str, mode: str, env: dict[str, str], check_server: Any = None
) -> dict[str, Any]:
    env = {**os.environ, **env}
    # stderr goes to a file: the leaky handlers' atexit "cleanups" print 1,500 tracebacks at
    # exit, enough to fill a pipe nobody reads.
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(
            [sys.executable, str(RUNNER), handler, str(INVOCATIONS), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            env=env,
            text=True,
        )
        try:
            assert proc.stdout is not None and proc.stdin is not None
            line = proc.stdout.readline()
            if not line:
                errors.seek(0)
                raise AssertionError(f"no summary from the runner: {errors.read()[-2000:]}")
            summary: dict[str, Any] = json.loads(line)
            if check_server is not None:
                check_server(summary)  # while the child still holds whatever it holds
        finally:
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return summary


_OUT_OF_RESOURCES = (
    "Too many open files",  # EMFILE: the container's 1,024 descriptors
    "1040",  # MySQL's ER_CON_COUNT_ERROR
    "Too many connections",
    "too many clients already",  # PostgreSQL's max_connections
    "remaining connection slots are reserved",
)


def _failed_for_lack_of_resources(failure: dict[str, Any]) -> bool:
    # with the messages of the exceptions behind it: botocore's own hides the errno
    message = " ".join([failure["message"], *failure.get("causes", ())])
    return any(text in message for text in _OUT_OF_RESOURCES)


@pytest.mark.parametrize("handler", LEAKY)
def test_without_the_decorator_the_leaky_handler_fails(
    handler: str, mariadb: Any, http_server: Any
) -> None:
    summary = run_story(handler, "bare", mariadb, http_server)
    failure = summary.get("failure")
    assert failure is not None, f"{handler} never failed: {summary}"
    assert _failed_for_lack_of_resources(failure), failure
    assert failure["invocation"] < INVOCATIONS


@pytest.mark.parametrize("handler", LEAKY)
def test_with_the_decorator_every_invocation_succeeds_and_nothing_stays_open(
    handler: str, mariadb: Any, http_server: Any
) -> None:
    sessions_before = mariadb.session_ids(user=None)  # any user's: Threads_connected's

    def server_side(summary: dict[str, Any]) -> None:
        assert mariadb.wait_new_sessions_gone(sessions_before, user=None) == []
        assert http_server.wait_open(0) == 0

    summary = run_story(handler, "decorated", mariadb, http_server, server_side)
    assert summary.get("failure") is None, summary
    assert summary["succeeded"] == INVOCATIONS
    assert summary["max_fd_delta"] == 0, summary


def test_with_the_decorator_a_raising_handler_leaks_nothing(mariadb: Any, http_server: Any) -> None:
    sessions_before = mariadb.session_ids(user=None)  # any user's: Threads_connected's

    def server_side(summary: dict[str, Any]) -> None:
        assert mariadb.wait_new_sessions_gone(sessions_before, user=None) == []
        assert http_server.wait_open(0) == 0

    summary = run_story("raising_after_connect", "decorated", mariadb, http_server, server_side)
    assert summary.get("failure") is None, summary
    assert summary["raised"] == INVOCATIONS  # the caller saw the handler's own exception
    assert summary["max_fd_delta"] == 0, summary


# --------------------------------------------------------------------------- one per driver

# Each keeps one connection per invocation in a module-level cache. Their servers allow
# fewer sessions than the story's invocations, so the undecorated run fails on the
# server's limit within a few dozen invocations instead of a thousand (the descriptor
# limit stays the same 1,024).
DRIVER_STORIES = [
    pytest.param("psycopg2_kept", "postgres", id="psycopg2"),
    pytest.param("asyncpg_kept", "postgres", id="asyncpg"),
    pytest.param("mysqlclient_kept", "mariadb", id="mysqlclient"),
    pytest.param("mysql_connector_kept", "mariadb", id="mysql-connector"),
    pytest.param("aiomysql_kept", "mariadb", id="aiomysql"),
]
STORY_MAX_CONNECTIONS = 40


@pytest.fixture(scope="module")
def story_servers() -> Iterator[dict[str, Any]]:
    from tests.servers.mariadb import MariaDBServer
    from tests.servers.postgres import PostgresServer

    with (
        MariaDBServer(max_connections=STORY_MAX_CONNECTIONS) as mariadb,
        PostgresServer(max_connections=STORY_MAX_CONNECTIONS, tcp_auth="trust") as postgres,
    ):
        yield {"mariadb": mariadb, "postgres": postgres}


def _driver_env(servers: dict[str, Any]) -> dict[str, str]:
    return {
        "STORY_DB": json.dumps(servers["mariadb"].connect_kwargs()),
        "STORY_PG": json.dumps(servers["postgres"].connect_kwargs()),
    }


@pytest.mark.parametrize(("handler", "server"), DRIVER_STORIES)
def test_without_the_decorator_each_drivers_story_runs_out_of_server_sessions(
    handler: str, server: str, story_servers: dict[str, Any]
) -> None:
    summary = run_story_with(handler, "bare", _driver_env(story_servers))
    failure = summary.get("failure")
    assert failure is not None, f"{handler} never failed: {summary}"
    assert _failed_for_lack_of_resources(failure), failure
    assert failure["invocation"] < INVOCATIONS


@pytest.mark.parametrize(("handler", "server"), DRIVER_STORIES)
def test_with_the_decorator_each_drivers_story_succeeds_and_leaves_nothing_open(
    handler: str, server: str, story_servers: dict[str, Any]
) -> None:
    db = story_servers[server]
    sessions_before = db.session_ids()

    def server_side(summary: dict[str, Any]) -> None:
        assert db.wait_new_sessions_gone(sessions_before) == []

    summary = run_story_with(handler, "decorated", _driver_env(story_servers), server_side)
    assert summary.get("failure") is None, summary
    assert summary["succeeded"] == INVOCATIONS
    assert summary["max_fd_delta"] == 0, summary


# --------------------------------------------------------------------------- more clients
# handler -> the server it talks to. Each keeps one client (or pool, or connector) per
# invocation in a cache. (boto3 talks to the counting HTTP server here, SQS's JSON protocol:
# moto answers a request in tens of milliseconds.)
CLIENT_STORIES = {
    "aiohttp_handlers:session_per_call": "http_server",
    "aiohttp_handlers:session_inside_asyncio_run": "http_server",
    "aiohttp_handlers:connector_per_call": "http_server",
    "redis_handlers:client_per_call": "redis_server",
    "redis_handlers:pool_per_call": "redis_server",
    "redis_handlers:asyncio_client_per_call": "redis_server",
    "redis_handlers:asyncio_pool_per_call": "redis_server",
    "boto3_handlers:client_per_call": "aws_http_server",
}


def _client_story_env(request: pytest.FixtureRequest, server_name: str) -> tuple[Any, Any]:
    """The story's environment and a server-side session counter for ``server_name``."""
    server = request.getfixturevalue(server_name.replace("aws_", ""))
    if server_name == "redis_server":
        return {"STORY_REDIS": server.url}, (server.clients, server.wait_clients)
    counts = (lambda: server.open_connections, server.wait_open)
    return {"STORY_HTTP": server.url, "STORY_AWS": server.url}, counts


@pytest.mark.parametrize(
    "handler", list(CLIENT_STORIES), ids=lambda h: h.replace("_handlers:", "-")
)
def test_without_the_decorator_each_client_story_fails(
    handler: str, request: pytest.FixtureRequest
) -> None:
    env, _ = _client_story_env(request, CLIENT_STORIES[handler])
    summary = run_story_with(handler, "bare", env)
    failure = summary.get("failure")
    assert failure is not None, f"{handler} never failed: {summary}"
    assert _failed_for_lack_of_resources(failure), failure
    assert failure["invocation"] < INVOCATIONS


@pytest.mark.parametrize(
    "handler", list(CLIENT_STORIES), ids=lambda h: h.replace("_handlers:", "-")
)
def test_with_the_decorator_each_client_story_succeeds_and_nothing_stays_open(
    handler: str, request: pytest.FixtureRequest
) -> None:
    env, (count, wait) = _client_story_env(request, CLIENT_STORIES[handler])
    before = count()

    def server_side(summary: dict[str, Any]) -> None:
        assert wait(before) == before  # while the child is still alive

    summary = run_story_with(handler, "decorated", env, server_side)
    assert summary.get("failure") is None, summary
    assert summary["succeeded"] == INVOCATIONS
    assert summary["max_fd_delta"] == 0, summary
