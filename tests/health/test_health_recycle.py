"""The guard under the real awslambdaric: recycles happen after the response, never instead.

"No request failed as the caller saw it" is the caller's view that LocalLambda records:
an invocation is ``ok`` when its response was delivered, even if the runtime exited right
after (``exited_after_response``), as in production, where the platform then records
``Runtime.ExitError`` for a request whose caller already has its answer.
"""

from __future__ import annotations

import collections
import time
from typing import Any

import pytest

from lambda_conn.local import InvocationRecord

pytestmark = pytest.mark.timeout(180)

FD_LEAK = """
    import os
    from lambda_conn._guard.decorator import health_guard

    LEAKED = []

    @health_guard
    def handler(event, context):
        LEAKED.append(os.open("/dev/null", os.O_RDONLY))  # never closed: a leak
        if isinstance(event, dict) and event.get("fail"):
            raise RuntimeError(f"failed on purpose after {len(LEAKED)}")
        return {"pid": os.getpid(), "served": len(LEAKED)}
"""

MEMORY_LEAK = """
    import os
    from lambda_conn import managed_connection

    HOARD = []

    @managed_connection
    def handler(event, context):
        HOARD.append(b"\\x01" * (1 << 20))  # 1 MB, written, so resident
        return {"pid": os.getpid(), "served": len(HOARD)}
"""

# Recycle as soon as a limit is crossed, at exactly the limit: numbers a test can predict.
PRECISE = {"HEALTH_MIN_LIFETIME": "0", "HEALTH_JITTER": "0"}


def environments(records: list[InvocationRecord]) -> list[list[InvocationRecord]]:
    by_env: dict[int, list[InvocationRecord]] = collections.defaultdict(list)
    for record in records:
        by_env[record.environment].append(record)
    return [by_env[key] for key in sorted(by_env)]


def assert_no_failure(records: list[InvocationRecord]) -> None:
    outcomes = collections.Counter(r.outcome for r in records)
    assert outcomes == {"ok": len(records)}, outcomes
    for record in records:
        if record.recycled:  # the only reset allowed: an exit after a delivered response
            assert record.reset_reason == "exited_after_response" and record.exit_status == 0


@pytest.mark.slow
def test_fd_leak_3000_invocations_recycle_after_delivered_responses(make_function: Any) -> None:
    # GIVEN a handler leaking one descriptor per invocation, FD_HEALTH_LIMIT=50% of 1,024
    fn = make_function(FD_LEAK, env={"FD_HEALTH_LIMIT": "50%", **PRECISE})
    # WHEN it is invoked 3,000 times
    start = time.perf_counter()
    records = [fn.invoke({"i": i}) for i in range(3000)]
    elapsed = time.perf_counter() - start
    # THEN no caller saw a failure, and every exit came after its response was delivered
    assert_no_failure(records)
    recycled = [r for r in records if r.recycled]
    assert all(r.exited_after_response for r in recycled)
    envs = environments(records)
    for env in envs:  # every response is the handler's own, the exiting one's included
        assert [r.response["served"] for r in env] == list(range(1, len(env) + 1))
        assert len({r.response["pid"] for r in env}) == 1
    # AND each environment served what the leak allows: limit 512 minus the baseline
    baseline = envs[0][0].fd_count  # after the first invocation, as the guard takes it
    assert baseline is not None
    per_env = 512 - baseline + 2  # the invocation that crosses 512 is served, then recycles
    full = envs[:-1]
    assert all(abs(len(env) - per_env) <= 2 for env in full), [len(e) for e in full]
    assert all(env[-1].recycled and not any(r.recycled for r in env[:-1]) for env in full)
    assert len(recycled) == len(full)
    assert 3000 // (per_env + 2) <= len(recycled) <= 3000 // (per_env - 2) + 1
    assert max(r.fd_count for r in records if r.fd_count is not None) <= 514
    # AND every recycle is in the log, under the request id the platform would blame
    lines = fn.log_events("health_recycle")
    assert [line["request_id"] for line in lines] == [r.request_id for r in recycled]
    assert all(line["reason"] == "fd" and line["limit"] == 512 for line in lines)
    metrics = [m for m in fn.emf() if m["Action"] == "recycle"]
    assert [m["RequestId"] for m in metrics] == [r.request_id for r in recycled]
    print(f"\n3,000 invocations in {elapsed:.1f} s; {len(recycled)} recycles")


def test_memory_leak_1mb_per_invocation_recycles_before_the_memory_kill(
    make_function: Any,
) -> None:
    # GIVEN 128 MB, MEMORY_HEALTH_LIMIT=70% (89.6 MB), 1 MB leaked per invocation
    fn = make_function(MEMORY_LEAK, memory_mb=128, env={"MEMORY_HEALTH_LIMIT": "70%", **PRECISE})
    # WHEN it runs long enough to need several environments
    records = [fn.invoke({"i": i}) for i in range(400)]
    # THEN nothing was killed for memory and no caller saw a failure
    assert_no_failure(records)
    recycled = [r for r in records if r.recycled]
    assert len(recycled) >= 4
    assert max(r.rss_bytes for r in records if r.rss_bytes) < 128 << 20
    lines = fn.log_events("health_recycle")
    assert len(lines) == len(recycled)
    assert all(
        line["reason"] == "memory" and line["measured"] > line["limit"] == int(0.7 * (128 << 20))
        for line in lines
    )


def test_variables_unset_guard_off_no_exit(make_function: Any) -> None:
    # GIVEN the same leak and no health variable
    fn = make_function(FD_LEAK)
    # WHEN it leaks past what 50% would have allowed
    records = [fn.invoke({"i": i}) for i in range(700)]
    # THEN one environment served them all: nothing recycled, nothing logged
    assert_no_failure(records)
    assert len(environments(records)) == 1 and not any(r.recycled for r in records)
    assert records[-1].fd_count > 700
    assert fn.log_events("health_recycle") == fn.log_events("health_guard_on") == []


def test_report_only_reports_and_never_exits(make_function: Any) -> None:
    fn = make_function(
        FD_LEAK, env={"FD_HEALTH_LIMIT": "10%", "HEALTH_REPORT_ONLY": "true", **PRECISE}
    )
    records = [fn.invoke({"i": i}) for i in range(300)]
    assert_no_failure(records)
    assert not any(r.recycled for r in records)
    reports = fn.log_events("health_limit_exceeded")
    assert len(reports) == 1 and reports[0]["deferred_by"] == "report_only"


def test_an_error_response_is_delivered_before_the_exit(make_function: Any) -> None:
    # GIVEN a handler that raises, and a recycle due after the third invocation
    fn = make_function(FD_LEAK, env={"HEALTH_MAX_INVOCATIONS": "3", **PRECISE})
    records = [fn.invoke({"fail": True}) for _ in range(4)]
    # THEN the caller got the handler's own error each time; the exit came after the third
    assert [r.outcome for r in records] == ["function_error"] * 4
    assert [r.error_type for r in records] == ["RuntimeError"] * 4
    assert records[2].error_message == "failed on purpose after 3"
    assert records[2].exited_after_response and records[2].reset_reason == "exited_after_response"
    assert records[3].cold_start and records[3].error_message == "failed on purpose after 1"


def sqs(i: int) -> dict[str, Any]:
    return {"Records": [{"eventSource": "aws:sqs", "messageId": f"msg-{i}", "body": "{}"}]}


def test_retried_batches_defer_to_the_next_request_or_the_hard_ceiling(make_function: Any) -> None:
    # GIVEN the default policy for retrying triggers, a limit of 10% (102 descriptors)
    fn = make_function(FD_LEAK, env={"FD_HEALTH_LIMIT": "10%", **PRECISE})
    # WHEN SQS batches take the environment past the limit
    records = [fn.invoke(sqs(i)) for i in range(150)]
    # THEN no batch was followed by an exit, and the deferral names the batch
    assert not any(r.recycled for r in records)
    deferred = fn.log_events("health_limit_exceeded")
    assert deferred[0]["deferred_by"] == "retrying_trigger"
    assert deferred[0]["event_source"] == "aws:sqs" and deferred[0]["first_record_id"]
    # AND the next synchronous request recycles, after its response
    request = fn.invoke({"path": "/"})
    assert request.outcome == "ok" and request.exited_after_response
    # AND batches alone recycle at the hard ceiling (90% of 1,024), before EMFILE
    records = [fn.invoke(sqs(i)) for i in range(1000)]
    assert_no_failure(records)
    first = next(r for r in records if r.recycled)
    assert first.fd_count >= 921 and first.exited_after_response
    line = fn.log_events("health_recycle")[-1]
    assert (
        line["at_ceiling"]
        and line["trigger"] == "batch"
        and line["request_id"] == (first.request_id)
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FD_HEALTH_LIMIT", "abc"),
        ("FD_HEALTH_LIMIT", "-1"),
        ("FD_HEALTH_LIMIT", "150%"),
        ("FD_HEALTH_LIMIT", "0"),
        ("MEMORY_HEALTH_LIMIT", "abc"),
        ("MEMORY_HEALTH_LIMIT", "-1"),
        ("MEMORY_HEALTH_LIMIT", "150%"),
        ("MEMORY_HEALTH_LIMIT", "0"),
        ("MEMORY_HEALTH_LIMIT", "900XB"),
    ],
)
def test_a_bad_value_stops_init_naming_the_variable(
    make_function: Any, name: str, value: str
) -> None:
    fn = make_function(FD_LEAK, env={name: value})
    record = fn.invoke({})
    assert record.outcome == "function_error" and record.reset_reason == "init_error"
    assert record.error_type == "ConfigurationError"
    assert f"{name}={value!r} is not valid: expected" in record.error_message
