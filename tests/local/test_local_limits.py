"""Timeout, memory and crash: the sandbox is killed and reset as Lambda does."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(60)

HANDLERS = """
    import os, time

    HOG = []

    def sleepy(event, context):
        time.sleep(5)
        return "too late"

    def hog(event, context):
        for _ in range(40):  # 400 MB, written so that the pages are resident
            HOG.append(b"x" * (10 << 20))
        time.sleep(5)
        return len(HOG)

    def _rss():
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    CALLS = []

    def grows_on_the_third(event, context):
        CALLS.append(1)
        if len(CALLS) == 1:  # to 6 MB under the size, in the first invocation
            HOG.append(b"x" * ((128 << 20) - (6 << 20) - _rss()))
        if len(CALLS) == 3:  # 12 MB more in about a millisecond: past 128 MB as it returns
            HOG.append(b"x" * (12 << 20))
        return _rss()

    def die(event, context):
        os._exit(3)

    def pid(event, context):
        return os.getpid()
"""


def test_timeout_kills_the_runtime_and_resets_the_environment(write_handler, make_lambda):
    # GIVEN a handler that sleeps longer than the function timeout
    write_handler("app", HANDLERS)
    fn = make_lambda("app.sleepy", timeout_s=1.0)
    # WHEN it is invoked
    record = fn.invoke()
    # THEN the caller sees Lambda's timeout after about a second, not five
    assert record.outcome == "timeout"
    assert record.error_type == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in (record.error_message or "")
    assert 1000 <= record.duration_ms < 3000
    assert record.reset_reason == "timeout" and record.exit_status == -9
    assert record.sigterm_sent is False  # no extension registered: SIGKILL straight away
    # AND the next invoke starts a new environment
    assert fn.invoke().cold_start


def test_memory_over_the_size_kills_the_runtime(write_handler, make_lambda):
    # GIVEN a handler that holds 400 MB with --memory 128
    write_handler("app", HANDLERS)
    fn = make_lambda("app.hog", memory_mb=128, timeout_s=10.0)
    record = fn.invoke()
    # THEN it is killed well before its sleep ends, as Lambda's OOM kill does
    assert record.outcome == "memory"
    assert record.error_type == "Runtime.OutOfMemory"
    assert "signal: killed" in (record.error_message or "")
    assert record.duration_ms < 5000
    assert record.rss_bytes is not None and record.rss_bytes > 128 * 2**20
    assert record.reset_reason == "memory" and record.exit_status == -9
    assert fn.shutdowns[-1].reason == "memory" and not fn.shutdowns[-1].sigterm_sent


def test_a_soak_never_hands_the_next_event_to_a_runtime_past_its_memory(write_handler, monkeypatch):
    """The third invocation crosses the size as it returns. The sampling while an
    invocation runs is made too rare to see it (on a loaded machine a 5 ms poll sometimes
    did, killing the invocation instead): only the measurement at /next, before the next
    event is handed over, can."""
    from lambda_conn.local import _environment, soak

    monkeypatch.setattr(_environment, "POLL_INTERVAL_S", 60.0)
    root = write_handler("app", HANDLERS)
    # WHEN it is soaked, the API handing each next event over as the runtime asks
    report = soak("app.grows_on_the_third", 5, handler_dir=root, keep_responses=True)
    records = report.records
    # THEN the third's answer stands, but the runtime past 128 MB is killed at /next
    assert [r.outcome for r in records] == ["ok"] * 5
    assert records[2].response > 128 << 20  # what the handler itself read
    assert [r.reset_reason for r in records] == [None, None, "memory", None, None]
    # AND the fourth event went to a new environment, not to the one over its size
    assert [r.cold_start for r in records] == [True, False, False, True, False]
    assert [s.reason for s in report.shutdowns] == ["memory", "spindown"]


def test_exit_before_the_response_is_a_crash(write_handler, make_lambda):
    write_handler("app", HANDLERS)
    fn = make_lambda("app.die")
    record = fn.invoke()
    assert record.outcome == "crash"
    assert record.error_type == "Runtime.ExitError"
    assert "exit status 3" in (record.error_message or "")
    assert record.exit_status == 3 and not record.exited_after_response
    assert fn.invoke().cold_start
