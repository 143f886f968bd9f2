"""Fast leaks under the real awslambdaric, with the default minimum lifetime (60 s) and
jitter (10%): the guard recycles before the leak fails a request, because it projects the
growth per invocation onto the hard maximum (RLIMIT_NOFILE, the function's memory).

"Failed" is the caller's view that LocalLambda records: a response delivered before the
runtime exited is ``ok``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from test_health_recycle import assert_no_failure, environments

pytestmark = pytest.mark.timeout(180)

MB = 1 << 20

LEAK = """
    import os
    from lambda_conn._guard.decorator import health_guard

    FDS = int(os.environ.get("LEAK_FDS", "0"))
    MBS = int(os.environ.get("LEAK_MB", "0"))
    LEAKED, HOARD = [], []

    @health_guard
    def handler(event, context):
        for _ in range(FDS):
            LEAKED.append(os.open("/dev/null", os.O_RDONLY))  # never closed
        if MBS:
            HOARD.append(b"\\x01" * (MBS << 20))  # written, so resident
        return {"pid": os.getpid(), "served": len(LEAKED) // max(FDS, 1)}
"""

BURST = """
    import os
    from lambda_conn._guard.decorator import health_guard

    LEAKED = []

    @health_guard
    def handler(event, context):
        try:
            for _ in range(event["open"]):
                LEAKED.append(os.open("/dev/null", os.O_RDONLY))
        except OSError as exc:
            return {"pid": os.getpid(), "error": exc.strerror, "held": len(LEAKED)}
        return {"pid": os.getpid(), "held": len(LEAKED)}
"""


def test_150_descriptors_per_invocation_are_recycled_before_emfile(make_function: Any) -> None:
    # GIVEN 150 descriptors leaked per invocation, FD_HEALTH_LIMIT=50%, default lifetime
    fn = make_function(LEAK, env={"FD_HEALTH_LIMIT": "50%", "LEAK_FDS": "150"})
    # WHEN it is invoked 60 times (about 0.2 s: the 60 s minimum lifetime never passes)
    records = [fn.invoke({"i": i}) for i in range(60)]
    # THEN no caller saw a failure, and each environment was recycled after a response
    assert_no_failure(records)
    recycled = [r for r in records if r.recycled]
    assert len(recycled) >= 5
    assert max(r.fd_count for r in records if r.fd_count is not None) < 1024
    # AND each recycle says it was projected: the rate, and where it would have led
    lines = fn.log_events("health_recycle")
    assert [line["request_id"] for line in lines] == [r.request_id for r in recycled]
    for line in lines:
        assert line["reason"] == "projected" and line["resource"] == "fd"
        assert line["rate"] == 150 and line["limit"] == 1024
        assert line["projection"] == line["measured"] + line["horizon"] * 150 >= 1024
    # AND the deferral the minimum lifetime still makes at the limit is in the log too
    deferred = fn.log_events("health_limit_exceeded")
    assert deferred and all(line["deferred_by"] == "min_lifetime" for line in deferred)
    assert all(len(env) <= 6 for env in environments(records))


def test_lambda_conn_soak_150_descriptors_per_invocation_0_failed(tmp_path: Path) -> None:
    # GIVEN the command line: lambda-conn soak, FD_HEALTH_LIMIT=50%, 150 per invocation
    (tmp_path / "leak.py").write_text(textwrap.dedent(LEAK))
    script = shutil.which("lambda-conn")
    cli = [script] if script else [sys.executable, "-m", "lambda_conn.cli"]
    args = ["soak", "leak:handler", "-n", "60", "--json", "out.json", "--logs", "out.log"]
    args += ["--env", "FD_HEALTH_LIMIT=50%", "--env", "LEAK_FDS=150"]
    done = subprocess.run([*cli, *args], cwd=tmp_path, capture_output=True, timeout=150)
    # THEN it exits 0: 60 of 60 succeeded, with recycles the log says were projected
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    summary = json.loads((tmp_path / "out.json").read_text())["summary"]
    assert (summary["succeeded"], summary["failed"]) == (60, 0)
    assert summary["recycles"] >= 5 and summary["peak_fds"] < 1024
    log = (tmp_path / "out.log").read_text(errors="replace")
    assert log.count('"reason": "projected"') == summary["recycles"]


def test_30_mb_per_invocation_is_recycled_before_the_memory_kill(make_function: Any) -> None:
    # GIVEN 128 MB, MEMORY_HEALTH_LIMIT=70%, 30 MB kept per invocation, default lifetime
    fn = make_function(LEAK, memory_mb=128, env={"MEMORY_HEALTH_LIMIT": "70%", "LEAK_MB": "30"})
    records = [fn.invoke({"i": i}) for i in range(30)]
    # THEN nothing was killed for memory and no caller saw a failure
    assert_no_failure(records)
    recycled = [r for r in records if r.recycled]
    assert len(recycled) >= 5
    assert max(r.rss_bytes for r in records if r.rss_bytes) < 128 * MB
    lines = fn.log_events("health_recycle")
    assert len(lines) == len(recycled)
    assert all(
        line["reason"] == "projected"
        and line["resource"] == "memory"
        and line["limit"] == 128 * MB
        and line["projection"] >= 128 * MB
        and 30 * MB <= line["rate"] < 32 * MB
        for line in lines
    )


def test_one_descriptor_per_invocation_recycles_near_the_limit_not_at_90_percent(
    make_function: Any,
) -> None:
    # GIVEN the seed story's slow leak, FD_HEALTH_LIMIT=50%, the default lifetime and jitter
    fn = make_function(LEAK, env={"FD_HEALTH_LIMIT": "50%", "LEAK_FDS": "1"})
    # WHEN it is invoked 1,500 times, fast enough that the 90% ceiling (921) would come
    # long before the 60 s minimum lifetime
    records = [fn.invoke({"i": i}) for i in range(1500)]
    # THEN no failure, and every recycle came near the (jittered) limit of 512
    assert_no_failure(records)
    baseline = records[0].fd_count
    assert baseline is not None
    assert max(r.fd_count for r in records if r.fd_count is not None) <= 514
    lines = fn.log_events("health_recycle")
    assert lines and len(lines) == sum(r.recycled for r in records)
    lowest = baseline + 0.9 * (512 - baseline)  # the most the 10% jitter can take off
    for line in lines:
        assert line["reason"] == "fd" and lowest <= line["measured"] <= 513
        assert line["overrides"] == "min_lifetime" and line["rate"] == 1
    # AND recycles stay rare: never more than the configured limit itself implies (one per
    # jittered headroom of leaked descriptors), none projected
    assert len(lines) <= 1500 // int(lowest - baseline) + 1
    assert fn.log_events("health_limit_unreachable") == []


def test_one_mb_per_invocation_recycles_near_the_limit_not_at_90_percent(
    make_function: Any,
) -> None:
    fn = make_function(LEAK, memory_mb=128, env={"MEMORY_HEALTH_LIMIT": "70%", "LEAK_MB": "1"})
    records = [fn.invoke({"i": i}) for i in range(300)]
    assert_no_failure(records)
    limit = int(0.7 * 128 * MB)
    assert max(r.rss_bytes for r in records if r.rss_bytes) <= limit + 2 * MB
    lines = fn.log_events("health_recycle")
    assert lines and len(lines) == sum(r.recycled for r in records)
    for line in lines:
        assert line["reason"] == "memory" and line["overrides"] == "min_lifetime"
        assert line["measured"] <= limit + 2 * MB
    baseline = min(line["baseline"] for line in lines)
    assert len(lines) <= 300 // int(0.9 * (limit - baseline) / MB) + 1


def test_a_jump_larger_than_the_room_left_is_logged_as_unreachable(make_function: Any) -> None:
    # GIVEN a handler that holds what it opens, FD_HEALTH_LIMIT=50%
    fn = make_function(BURST, env={"FD_HEALTH_LIMIT": "50%"})
    before = [fn.invoke({"open": 1}) for _ in range(3)]
    room = 1024 - before[-1].fd_count
    # WHEN one invocation tries to open 2,000 more: more than the room it has
    jump = fn.invoke({"open": 2000})
    # THEN it ran into EMFILE (no check after an invocation can prevent that) ...
    assert jump.outcome == "ok" and jump.response["error"] == "Too many open files"
    # ... and the guard says so, with the jump and the room it had, then recycles
    (line,) = fn.log_events("health_limit_unreachable")
    assert line["resource"] == "fd" and line["hard_max"] == 1024
    assert line["room_left"] == room and line["jump"] == room
    assert line["request_id"] == jump.request_id
    assert jump.recycled and jump.reset_reason == "exited_after_response"
    after = fn.invoke({"open": 1})
    assert after.outcome == "ok" and after.cold_start and after.response["held"] == 1
    # AND the recycle's metric still reached the log (no import at the descriptor limit)
    assert [m["RequestId"] for m in fn.emf() if m["Action"] == "recycle"] == [jump.request_id]
    assert fn.log_events("health_check_failed") == []
