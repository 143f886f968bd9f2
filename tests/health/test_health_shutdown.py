"""Graceful shutdown under the real awslambdaric, proven on the database's side.

A clean close sends COM_QUIT; a process that is SIGKILLed leaves the server to notice a
dropped socket, which it counts in ``Aborted_clients``. So "closed by our SIGTERM handler"
is: the session is gone and ``Aborted_clients`` did not move.
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.timeout(120)

REUSED_DB = """
    import os
    import pymysql
    from lambda_conn import managed_connection, reused_connection

    db = reused_connection(
        lambda: pymysql.connect(
            host="127.0.0.1",
            port=int(os.environ["DB_PORT"]),
            user=os.environ["DB_USER"],
            password=os.environ["DB_PASSWORD"],
            database=os.environ["DB_NAME"],
            ssl_disabled=True,
        ),
        name="db",
    )

    @managed_connection
    def handler(event, context):
        with db().cursor() as cur:
            cur.execute("SELECT CONNECTION_ID()")
            return {"session": cur.fetchone()[0]}
"""

# awslambdaric runs Python signal handlers only where it polls /next from a thread, which
# it does for AWS_EXECUTION_ENV python3.12 and newer (see lambda-runtime-facts.md).
THREAD_POLLING = {"AWS_EXECUTION_ENV": "AWS_Lambda_python3.12"}


def test_sigterm_closes_the_reused_connection_cleanly(make_function: Any, mariadb: Any) -> None:
    # GIVEN a reused connection, and the guard on (so graceful shutdown is installed)
    fn = make_function(
        REUSED_DB, env={"FD_HEALTH_LIMIT": "50%", **THREAD_POLLING, **mariadb.function_env()}
    )
    first, second = fn.invoke({}), fn.invoke({})
    session = first.response["session"]
    assert second.response["session"] == session  # one connection, kept across invocations
    assert session in {s["id"] for s in mariadb.client_sessions()}
    aborted = mariadb.aborted_clients()
    # WHEN Lambda spins the environment down (thaw, SIGTERM, SIGKILL after 500 ms)
    record = fn.fn.shutdown()
    # THEN SIGTERM was sent (our extension registered), the runtime exited within the grace,
    assert record is not None and record.extensions == 1 and record.sigterm_sent
    assert record.exited_within_grace and record.exit_status == 0
    # AND the server saw a clean quit: the session is gone and no client was aborted
    assert mariadb.wait_session_gone(session)
    assert mariadb.aborted_clients() == aborted


def test_without_graceful_shutdown_the_session_is_aborted(make_function: Any, mariadb: Any) -> None:
    # GIVEN the same function with graceful shutdown turned off: no extension, no handler
    env = {"FD_HEALTH_LIMIT": "50%", "HEALTH_GRACEFUL_SHUTDOWN": "off"}
    fn = make_function(REUSED_DB, env={**env, **THREAD_POLLING, **mariadb.function_env()})
    session = fn.invoke({}).response["session"]
    aborted = mariadb.aborted_clients()
    # WHEN it is spun down  THEN Lambda SIGKILLs it and the server counts an aborted client
    record = fn.fn.shutdown()
    assert record is not None and record.extensions == 0 and not record.sigterm_sent
    assert mariadb.wait_session_gone(session)
    assert mariadb.aborted_clients() == aborted + 1


def test_recycle_closes_the_reused_connection_before_exiting(
    make_function: Any, mariadb: Any
) -> None:
    # GIVEN a recycle due after every second invocation
    env = {"HEALTH_MAX_INVOCATIONS": "2", "HEALTH_MIN_LIFETIME": "0", "HEALTH_JITTER": "0"}
    fn = make_function(REUSED_DB, env={**env, **mariadb.function_env()})
    aborted = mariadb.aborted_clients()
    records = [fn.invoke({}) for _ in range(4)]
    # THEN two environments, each exited after its second response, quitting cleanly
    assert [r.outcome for r in records] == ["ok"] * 4
    assert [r.exited_after_response for r in records] == [False, True, False, True]
    sessions = {r.response["session"] for r in records}
    assert len(sessions) == 2
    assert all(mariadb.wait_session_gone(s) for s in sessions)
    assert mariadb.aborted_clients() == aborted


IN_FLIGHT_DB = """
    import os
    import time
    import pymysql
    from lambda_conn import managed_connection

    @managed_connection
    def handler(event, context):
        conn = pymysql.connect(
            host="127.0.0.1",
            port=int(os.environ["DB_PORT"]),
            user=os.environ["DB_USER"],
            password=os.environ["DB_PASSWORD"],
            database=os.environ["DB_NAME"],
            ssl_disabled=True,
        )
        with conn.cursor() as cur:
            cur.execute("SELECT CONNECTION_ID()")
            print("session", cur.fetchone()[0], flush=True)
        time.sleep(30)  # waits on something slow, the connection still open: a timeout
"""


def test_a_timeout_closes_the_in_flight_connection_cleanly(
    make_function: Any, mariadb: Any
) -> None:
    # GIVEN a handler that holds its own connection when the function times out
    env = {"FD_HEALTH_LIMIT": "50%", **THREAD_POLLING, **mariadb.function_env()}
    fn = make_function(IN_FLIGHT_DB, env=env, timeout_s=2.0)
    aborted = mariadb.aborted_clients()
    # WHEN the invocation times out (Lambda: SIGTERM, SIGKILL after the grace)
    record = fn.invoke({})
    assert record.outcome == "timeout" and record.sigterm_sent
    # THEN the server saw a clean quit: the session is gone and no client was aborted
    lines = fn.output.read_text().split()
    session = int(lines[lines.index("session") + 1])
    assert mariadb.wait_session_gone(session)
    assert mariadb.aborted_clients() == aborted
