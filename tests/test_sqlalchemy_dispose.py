"""``engine.dispose()`` inside a scope: no false leak report, nothing left open.

``dispose()`` replaces the Engine's pool while a connection may still be checked out of
the old one. The leak report must be decided by the connections still open on the
server, not by pool slots; and every pool the Engine had is closed cleanly (COM_QUIT).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

import lambda_conn
from lambda_conn import managed_connection


def leak_events(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "lambda_conn"]
    return [r for r in records if r["event"] == "connections_leaked"]


def checked_out_across_dispose(engine: Any) -> None:
    conn = engine.connect()
    conn.execute(sa.text("SELECT 1"))
    engine.dispose()  # while `conn` is checked out of the old pool


def returned_to_the_old_pool(engine: Any) -> None:
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    # `conn` went back to the old pool, which still holds it


def raw_connections_of_both_pools(engine: Any) -> None:
    engine.raw_connection().cursor().execute("SELECT 1")
    engine.dispose()
    engine.raw_connection().cursor().execute("SELECT 1")  # from the new pool, kept


def used_again_after_dispose(engine: Any) -> None:
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    engine.dispose()
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))


CASES = {
    "checked out across dispose": checked_out_across_dispose,
    "returned to the old pool": returned_to_the_old_pool,
    "raw connections of both pools": raw_connections_of_both_pools,
    "used again after dispose": used_again_after_dispose,
}


@pytest.mark.parametrize("body", CASES.values(), ids=CASES.keys())
def test_dispose_mid_scope_is_not_a_leak_and_leaves_no_session(
    mariadb: Any, body: Callable[[Any], None], caplog: pytest.LogCaptureFixture
) -> None:
    before = mariadb.session_ids()
    aborted = mariadb.aborted_clients()
    leaked = lambda_conn.stats()["leaked"]
    kept: list[Any] = []  # the Engine outlives the scope: nothing closes by garbage collection

    @managed_connection
    def handler(event: object, context: object) -> None:
        engine = sa.create_engine(mariadb.url())
        kept.append(engine)
        body(engine)

    with caplog.at_level("INFO", logger="lambda_conn"):
        handler({}, None)
    assert mariadb.new_sessions(before) == []  # at once: closed by the scope
    assert leak_events(caplog) == []
    assert lambda_conn.stats()["leaked"] == leaked
    assert mariadb.aborted_clients() == aborted  # closed with COM_QUIT, not dropped


def test_a_connection_really_left_open_after_dispose_is_still_reported(
    mariadb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Live connections decide: one the scope could not close is reported."""
    kept: list[Any] = []

    @managed_connection
    def handler(event: object, context: object) -> None:
        engine = sa.create_engine(mariadb.url())
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
        raw = engine.raw_connection()
        raw.detach()  # the pool lets go of it; the socket stays open
        kept.append(raw.dbapi_connection)

    leaked = lambda_conn.stats()["leaked"]
    with caplog.at_level("INFO", logger="lambda_conn"):
        handler({}, None)
    try:
        assert lambda_conn.stats()["leaked"] == leaked + 1
        [event] = leak_events(caplog)
        assert event["connections"][0]["kind"] == "sqlalchemy.Engine"
    finally:
        kept[-1].close()
