"""A reused connection serves one thread at a time: never two at once.

Within an invocation the kept connection belongs to the first thread that takes it;
another thread that sees the invocation's scope (``copy_context().run``) gets its own
connection, closed with the invocation; one that does not gets a clear error.
"""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pymysql
import pytest

from lambda_conn import LambdaConnError, RDSConnector, managed_connection, reused_connection

WORKERS = 4
QUERIES = 30


def session_id(conn: Any) -> int:
    with conn.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        return int(cursor.fetchone()[0])


def hammer(db: Any, tag: int) -> int:
    """Many round trips, each checked: a shared connection breaks the protocol."""
    conn = db()
    for n in range(QUERIES):
        with conn.cursor() as cursor:
            cursor.execute("SELECT %s, SLEEP(0.001)", (tag * 1000 + n,))
            assert cursor.fetchone()[0] == tag * 1000 + n
    return session_id(db())


def rds_reused(mariadb: Any) -> Any:
    kwargs = mariadb.connect_kwargs()
    return RDSConnector(
        kwargs["host"],
        port=kwargs["port"],
        user=kwargs["user"],
        password=kwargs["password"],
        database=kwargs["database"],
        tls=False,
    ).reused()


REUSED = {
    "reused_connection": lambda mariadb: reused_connection(
        lambda: pymysql.connect(**mariadb.connect_kwargs())
    ),
    "RDSConnector.reused": rds_reused,
}


@pytest.mark.parametrize("make", REUSED.values(), ids=REUSED.keys())
def test_threads_of_one_invocation_each_get_their_own_connection(mariadb: Any, make: Any) -> None:
    db = make(mariadb)

    @managed_connection
    def handler(event: object, context: object) -> tuple[int, list[int]]:
        kept = session_id(db())  # the handler's thread takes the kept connection
        with ThreadPoolExecutor(WORKERS) as pool:
            futures = [
                pool.submit(contextvars.copy_context().run, hammer, db, tag)
                for tag in range(1, WORKERS + 1)
            ]
            mine = hammer(db, 0)  # meanwhile, on the kept one
            theirs = [future.result() for future in futures]
        assert mine == kept
        return kept, theirs

    try:
        kept, theirs = handler({}, None)
        assert kept not in theirs and len(set(theirs)) == WORKERS
        # The workers' connections were closed with the invocation; the kept one stays.
        # Checked by session id: a session an earlier test left to the garbage collector
        # may end meanwhile and would throw off a plain count.
        assert all(mariadb.wait_session_gone(worker) for worker in theirs)
        assert [s["id"] for s in mariadb.client_sessions()].count(kept) == 1
        # Next invocation: the kept connection is free again, for whichever thread.
        again = handler({}, None)
        assert again[0] == kept and db.reconnects == 0
    finally:
        db.close()


def test_a_thread_outside_the_scope_gets_a_clear_error(mariadb: Any) -> None:
    db = reused_connection(lambda: pymysql.connect(**mariadb.connect_kwargs()), name="db")

    @managed_connection
    def handler(event: object, context: object) -> int:
        kept = session_id(db())
        busy = r"in use by thread 'MainThread'.*copy_context"
        # no copy_context: the worker has no scope
        with ThreadPoolExecutor(1) as pool, pytest.raises(LambdaConnError, match=busy):
            pool.submit(db).result()
        return kept

    try:
        kept = handler({}, None)
        assert session_id(db()) == kept  # unharmed
    finally:
        db.close()


def test_the_kept_connection_follows_the_thread_that_uses_it_alone(mariadb: Any) -> None:
    db = reused_connection(lambda: pymysql.connect(**mariadb.connect_kwargs()))
    sessions: list[int] = []

    @managed_connection
    def handler(event: object, context: object) -> None:
        worker = threading.Thread(target=contextvars.copy_context().run, args=(work,))
        worker.start()
        worker.join()

    def work() -> None:
        sessions.append(session_id(db()))

    try:
        handler({}, None)
        handler({}, None)
        sessions.append(session_id(db()))  # a finished thread holds nothing
        assert len(set(sessions)) == 1 and db.reconnects == 0
    finally:
        db.close()
