"""``reused_connection(release_above=...)`` under the real awslambdaric: the server sample
(a round trip) runs after the response is posted, so the caller never waits for it.

The handler module slows the sample down to 0.5 s. The caller's answer (``response_ms``)
must come well before that, while the invocation itself (until the runtime asks for the
next event, ``duration_ms``) lasts at least that long; and the sample must still have
released the connection, as the server sees it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

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
            return {"session": cur.fetchone()[0]}
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
    kwargs = mariadb.connect_kwargs()
    env = {
        "DB_PORT": str(kwargs["port"]),
        "DB_USER": kwargs["user"],
        "DB_PASSWORD": kwargs["password"],
        "DB_NAME": kwargs["database"],
        "SLOW_SAMPLE_S": str(SLOW_SAMPLE_S),
    }
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
