"""Shared fixtures: real servers from tests/servers (see there for the why)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# `tests.servers` must import under plain `pytest` too, not only `python3 -m pytest`.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.servers import (  # noqa: E402
    CountingHTTPServer,
    MariaDBNotInstalled,
    MariaDBServer,
    SilentTCPServer,
    raise_fd_limit,
)


def pytest_configure(config: pytest.Config) -> None:
    raise_fd_limit()  # some tests hold more than 1,024 client connections


def _new_mariadb(**options: Any) -> MariaDBServer:
    try:
        return MariaDBServer(**options)
    except MariaDBNotInstalled as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDBServer]:
    """One private MariaDB for the session; max_connections allows >1,024 clients."""
    server = _new_mariadb(max_connections=2000)
    yield server
    server.close()


@pytest.fixture
def make_mariadb() -> Iterator[Callable[..., MariaDBServer]]:
    """Factory for instances a test may misconfigure, stop or restart; closed after it."""
    servers: list[MariaDBServer] = []

    def make(**options: Any) -> MariaDBServer:
        server = _new_mariadb(**options)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def _new_postgres(**settings: Any) -> Any:
    from tests.servers.postgres import PostgresNotInstalled, PostgresServer

    try:
        return PostgresServer(**settings)
    except PostgresNotInstalled as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """One private PostgreSQL for the session (tests/servers/postgres.py)."""
    server = _new_postgres()
    yield server
    server.close()


@pytest.fixture
def make_postgres() -> Iterator[Callable[..., Any]]:
    """Factory for PostgreSQL instances a test may misconfigure or stop; closed after it."""
    servers: list[Any] = []

    def make(**settings: Any) -> Any:
        server = _new_postgres(**settings)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def http_server() -> Iterator[CountingHTTPServer]:
    with CountingHTTPServer() as server:
        yield server


@pytest.fixture
def silent_server() -> Iterator[SilentTCPServer]:
    with SilentTCPServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Any]:
    """One private redis-server for the session (tests/servers/redis.py)."""
    from tests.servers.redis import RedisNotInstalled, RedisServer

    try:
        server = RedisServer()
    except RedisNotInstalled as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.close()


@pytest.fixture(scope="session")
def moto() -> Iterator[Any]:
    """One private moto server (AWS APIs on loopback, dummy keys) for the session."""
    from tests.servers.moto import MotoServer

    server = MotoServer()
    yield server
    server.close()
