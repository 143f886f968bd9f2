"""``reused_connection(release_above=...)`` under the real awslambdaric: the server sample
(a round trip) runs after the response is posted, so the caller never waits for it.

The handler module slows the sample down to 0.5 s. The caller's answer (``response_ms``)
must come well before that, while the invocation itself (until the runtime asks for the
next event, ``duration_ms``) lasts at least that long; and the sample must still have
released the connection, as the server sees it.

The same in multi-concurrent mode (``AWS_LAMBDA_MAX_CONCURRENCY=2``: awslambdaric forks two
workers), which ``LocalLambda`` does not run: there the runtime is started by hand against
``tests/servers/runtime_api.py``, which serves both workers' ``/next`` at once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lambda_conn.local._config import FunctionConfig
from tests.servers.runtime_api import RuntimeApi

pytestmark = pytest.mark.timeout(60)

SLOW_SAMPLE_S = 0.5

SLOW_SAMPLE_HANDLER = """
    import logging
    import os
    import time

    import pymysql
    from lambda_conn import _utilization, managed_connection, reused_connection

    logging.getLogger("lambda_conn").setLevel(logging.INFO)  # reused_connection_released

    _real_sample = _utilization.sample

    def _slow_sample(conn, family):
        time.sleep(float(os.environ["SLOW_SAMPLE_S"]))
        return _real_sample(conn, family)

    _utilization.sample = _slow_sample

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
        release_above=0.0001,  # any session of the 2,000 allowed: always above
        sample_every=0.001,  # due at the end of every invocation
    )

    @managed_connection
    def handler(event, context):
        with db().cursor() as cur:
            cur.execute("SELECT CONNECTION_ID()")
            return {"session": cur.fetchone()[0], "pid": os.getpid()}
"""


def _log_events(output: Path, event: str) -> list[dict[str, Any]]:
    found = []
    for line in output.read_text(errors="replace").splitlines():
        start = line.find('{"logger": "lambda_conn"')
        if start >= 0 and json.loads(line[start:])["event"] == event:
            found.append(json.loads(line[start:]))
    return found


def test_the_release_sample_runs_after_the_response_is_posted(
    write_handler: Any, make_lambda: Any, mariadb: Any, tmp_path: Path
) -> None:
    # GIVEN a handler whose reused connection samples the server (slowly) every invocation,
    # on a server it always finds above the threshold
    write_handler("app", SLOW_SAMPLE_HANDLER)
    env = _db_env(mariadb)
    output = tmp_path / "runtime.log"
    with output.open("wb") as sink:
        fn = make_lambda("app.handler", env=env, output=sink, timeout_s=10.0)
        # WHEN it is invoked three times (the first one cold)
        records = [fn.invoke({}) for _ in range(3)]
    assert [r.outcome for r in records] == ["ok"] * 3
    sessions = [r.response["session"] for r in records]
    for record in records[1:]:  # warm: no Init in the timings
        # THEN the caller had its answer well before the slow sample could have finished,
        assert record.response_ms is not None
        assert record.response_ms < SLOW_SAMPLE_S * 1000 / 2, record
        # while the invocation went on for the sample, after the response
        assert record.duration_ms >= SLOW_SAMPLE_S * 1000, record
    # AND each sample released the kept connection: the server no longer has the session,
    # and every invocation connected anew
    assert len(set(sessions)) == 3
    assert all(mariadb.wait_session_gone(s) for s in sessions)
    released = _log_events(output, "reused_connection_released")
    assert len(released) == 3 and all(e["name"] == "db" for e in released)
    assert _log_events(output, "after_response_hook_failed") == []


def _db_env(mariadb: Any) -> dict[str, str]:
    return {**mariadb.function_env(), "SLOW_SAMPLE_S": str(SLOW_SAMPLE_S)}


WORKERS = 2
INVOCATIONS = 4

# awslambdaric's own entry point imports the handler in each worker, after the fork. A
# wrapper that starts it by hand may import it first, in the parent: the reused connection
# is made there (it connects on first use, in a worker), and here the post hook is
# installed there too, so the workers inherit the wrapped class.
IMPORTED_BEFORE_THE_FORK = """
import sys

from awslambdaric.__main__ import main

import app
from lambda_conn import _after_response

_after_response.install(_after_response.posting_client())
main(["awslambdaric", sys.argv[1]])
"""


@pytest.mark.parametrize("entry", ["awslambdaric", "imported_before_the_fork"])
def test_in_multi_concurrent_workers_the_release_sample_runs_after_each_post(
    write_handler: Any, mariadb: Any, tmp_path: Path, entry: str
) -> None:
    # GIVEN the same handler under the real awslambdaric in multi-concurrent mode: two
    # forked workers, each asking for events on a connection of its own
    root = write_handler("app", SLOW_SAMPLE_HANDLER)
    start = ["-m", "awslambdaric"]
    if entry == "imported_before_the_fork":
        start = ["-c", IMPORTED_BEFORE_THE_FORK]
    config = FunctionConfig.create(
        "app.handler",
        handler_dir=root,
        memory_mb=512,
        timeout_s=10.0,
        env=_db_env(mariadb),
        function_name=None,
        init_timeout_s=10.0,
    )
    output = tmp_path / "runtime.log"
    with RuntimeApi() as api, output.open("wb") as sink:
        environ = config.environ(api.address)
        environ["AWS_LAMBDA_MAX_CONCURRENCY"] = str(WORKERS)
        runtime = subprocess.Popen(
            [config.python, *start, config.spec.lambda_form],
            cwd=config.task_root,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its group: the parent and the workers it forks
        )
        try:
            assert len(api.wait_for("next", WORKERS, 30.0)) == WORKERS, output.read_text()
            # WHEN four events are queued at once (each worker serves two, one at a time)
            ids = [api.invoke({"n": n}) for n in range(INVOCATIONS)]
            posts = api.wait_for("response", INVOCATIONS, 30.0)
            # every worker back at /next after its last invocation: every sample taken
            api.wait_for("next", WORKERS + INVOCATIONS, 30.0)
        finally:
            os.killpg(runtime.pid, signal.SIGKILL)
            runtime.wait()
    log = output.read_text(errors="replace")
    assert len(posts) == INVOCATIONS, log
    assert api.requests("error") == [] and api.requests("init_error") == [], log
    handed = {r.request_id: r for r in api.requests("handed")}
    assert sorted(handed) == sorted(ids)
    assert len({r.connection for r in handed.values()}) == WORKERS  # both workers served
    assert len({post.json()["pid"] for post in posts}) == WORKERS
    nexts = api.requests("next")
    for post in posts:
        # THEN each response was posted well before the slow sample could have finished,
        event = handed[post.request_id]
        assert post.connection == event.connection, (post, event)
        assert post.at - event.at < SLOW_SAMPLE_S / 2, (post, event)
        # and the worker asked for its next event only once the sample had run, after it
        [after] = [n for n in nexts if n.connection == post.connection and n.at > post.at][:1]
        assert after.at - post.at >= SLOW_SAMPLE_S, (post, after)
    # AND each sample released the kept connection: the server no longer has the session
    sessions = [post.json()["session"] for post in posts]
    assert len(set(sessions)) == INVOCATIONS
    assert all(mariadb.wait_session_gone(s) for s in sessions)
    released = _log_events(output, "reused_connection_released")
    assert len(released) == INVOCATIONS and all(e["name"] == "db" for e in released), log
    assert _log_events(output, "after_response_hook_failed") == []
