"""The supervisor's own mechanics: it serves the API from the waiting thread, wakes on the
runtime's exit through its pidfd, and measures descriptors exactly."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from lambda_conn.local._api_server import RuntimeApiServer
from lambda_conn.local._state import FunctionMetadata, SandboxState

pytestmark = pytest.mark.timeout(60)

HANDLERS = """
    import os

    KEPT = []

    def handler(event, context):
        return "ok"

    def opens_one(event, context):
        KEPT.append(open(os.devnull))
        return len(os.listdir("/proc/self/fd")) - 1  # not the one listdir used
"""


def test_environments_run_no_thread_of_their_own(write_handler, make_lambda):
    # GIVEN the supervisor's threads before any environment exists
    write_handler("app", HANDLERS)
    before = threading.active_count()
    # WHEN three environments are started, invoked and left frozen
    functions = [make_lambda("app.handler", output=subprocess.DEVNULL) for _ in range(3)]
    for fn in functions:
        for _ in range(2):
            assert fn.invoke().outcome == "ok"
    # THEN no thread was added: each is served by the thread that invokes it, and a
    # frozen one costs no thread and no wake-up
    assert threading.active_count() == before


def test_the_descriptor_count_is_exact_after_every_invocation(write_handler, make_lambda):
    # GIVEN a handler that keeps one more open file per invocation and reports its count
    write_handler("app", HANDLERS)
    fn = make_lambda("app.opens_one", output=subprocess.DEVNULL)
    records = [fn.invoke() for _ in range(5)]
    # THEN each record's count is the runtime's own, one more each time
    assert [r.fd_count for r in records] == [r.response for r in records]
    counts = [r.fd_count for r in records]
    assert counts == list(range(counts[0], counts[0] + 5))


def test_a_wait_ends_when_the_runtime_exits_without_a_timeout_to_poll_with():
    # GIVEN a server watching the pidfd of a process that exits on its own
    server = RuntimeApiServer(SandboxState(FunctionMetadata("f", "$LATEST", "app.handler")))
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])
    pidfd = os.pidfd_open(proc.pid)
    try:
        server.watch(pidfd)
        # WHEN it is pumped with no timeout at all, THEN it returns once the process
        # exited (without the pidfd in its poll it would block until the test's timeout)
        assert server.pump(None) is True
        assert proc.poll() is not None
    finally:
        server.stop()
        os.close(pidfd)
        proc.wait()


def test_a_soak_measures_each_invocation_before_it_dispatches_the_next(write_handler):
    # GIVEN a handler that keeps one more open file per invocation and reports its count
    from lambda_conn.local import soak

    root = write_handler("app", HANDLERS)
    # WHEN it is soaked: each next invocation is dispatched before the last is recorded
    report = soak(
        "app.opens_one", 8, handler_dir=root, output=subprocess.DEVNULL, keep_responses=True
    )
    # THEN every record still holds its own invocation's count, one more each time
    records = report.records
    assert [r.fd_count for r in records] == [r.response for r in records]
    assert [r.fd_count for r in records] == list(
        range(records[0].fd_count, records[0].fd_count + 8)
    )
    # AND exactly 8 ran: nothing was dispatched after the last, so the end is a spin-down
    assert [s.reason for s in report.shutdowns] == ["spindown"]
    assert sum(r.cold_start for r in records) == 1


def test_an_invocation_dispatched_ahead_and_never_asked_for_is_killed(write_handler, make_lambda):
    # GIVEN an invoke that promised another one (a soak's ``more``)
    write_handler("app", HANDLERS)
    fn = make_lambda("app.handler", output=subprocess.DEVNULL)
    assert fn._invoke(b"{}", keep_response=True, more=True).outcome == "ok"
    # WHEN the next invoke brings another event, the runtime's current one is not it
    record = fn._invoke(b'{"other": 1}', keep_response=True)
    # THEN that environment is killed, and the new event starts a fresh one
    assert record.outcome == "ok" and record.cold_start
    assert [s.reason for s in fn.shutdowns] == ["interrupted"]
    # AND closing after a promise that is not kept kills the environment too
    assert fn._invoke(b"{}", keep_response=True, more=True).outcome == "ok"
    fn.close()
    assert [s.reason for s in fn.shutdowns] == ["interrupted", "interrupted"]
    assert len(fn.records) == 3
