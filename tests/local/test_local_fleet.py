"""Fleet soak: many execution environments at once, each a real awslambdaric process.

What is checked: environments are created only when every warm one is busy, each is reset
on its own, runtimes die with the supervisor (also those forked from caller threads),
Ctrl-C leaves no process behind, RDSConnector's retries are counted from the function's
output, and the records stay compact.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from lambda_conn.local import FleetReport, fleet_soak
from lambda_conn.local._fleet_report import fleet_failure_kind, fleet_rows
from tests.servers.processes import MARK, marked

pytestmark = pytest.mark.timeout(180)


def _soak(handler: str, n: int, **options: Any) -> FleetReport:
    """fleet_soak with the function's output discarded (not mixed into pytest's)."""
    return fleet_soak(handler, n, output=subprocess.DEVNULL, **options)


HANDLERS = """
    import os
    import sys
    import time

    SEEN = []

    def barrier(event, context):
        # The first invocation of each new environment but the very first waits until
        # event["want"] environments exist: they can only all exist if the fleet made a
        # new one for every request that found the warm ones busy.
        SEEN.append(1)
        root = event["dir"]
        if len(SEEN) == 1:
            with open(os.path.join(root, str(os.getpid())), "w"):
                pass
            if len(os.listdir(root)) > 1:
                deadline = time.monotonic() + 20
                while len(os.listdir(root)) < event["want"]:
                    if time.monotonic() > deadline:
                        return {"pid": os.getpid(), "barrier": "timed out"}
                    time.sleep(0.005)
        time.sleep(event.get("sleep_s", 0))
        return {"pid": os.getpid()}

    def crash_third(event, context):
        SEEN.append(1)
        if len(SEEN) == 3:
            sys.exit(3)
        time.sleep(0.01)
        return {"pid": os.getpid()}

    def fail_long(event, context):
        raise ValueError("x" * 2000)

    def ok(event, context):
        return {"pid": os.getpid()}
"""


def _pids(report: FleetReport) -> set[int]:
    return {r.response["pid"] for r in report.records if r.ok}


def test_a_new_environment_only_when_every_warm_one_is_busy(write_handler, tmp_path):
    root = write_handler("app", HANDLERS)
    (tmp_path / "seen").mkdir()
    report = _soak(
        "app.barrier",
        60,
        concurrency=4,
        event={"dir": str(tmp_path / "seen"), "want": 4},
        handler_dir=root,
        keep_responses=True,
    )
    assert report.summary.failed == 0
    assert not [r for r in report.records if r.response.get("barrier")]
    # four environments, all alive at once, each its own process; the other 56
    # invocations went to warm ones
    assert report.fleet.environments_created == 4
    assert report.summary.cold_starts == 4
    assert report.fleet.peak_environments == 4
    assert len(_pids(report)) == 4
    # one fleet number per process, and records in invocation order
    by_env: dict[int, set[int]] = {}
    for r in report.records:
        by_env.setdefault(r.environment, set()).add(r.response["pid"])
    assert sorted(by_env) == [1, 2, 3, 4]
    assert all(len(pids) == 1 for pids in by_env.values())
    assert [r.index for r in report.records] == list(range(60))
    assert len(report.started_s) == 60
    # every environment was spun down at the end
    assert sorted(s.environment for s in report.shutdowns) == [1, 2, 3, 4]
    assert {s.reason for s in report.shutdowns} == {"spindown"}


def test_as_many_concurrent_requests_as_callers_get_as_many_environments(write_handler, tmp_path):
    # GIVEN 6 requests from 6 concurrent callers, each request taking 1 s: longer than it
    # takes every caller to send its request, so no environment is free again before then
    root = write_handler("app", HANDLERS)
    (tmp_path / "seen").mkdir()
    report = _soak(
        "app.barrier",
        6,
        concurrency=6,
        event={"dir": str(tmp_path / "seen"), "want": 1, "sleep_s": 1.0},
        handler_dir=root,
        keep_responses=True,
    )
    # THEN each request had an environment of its own, as Lambda gives 6 concurrent
    # requests: no caller kept the next request for its own environment while another
    # caller was free to send it
    assert report.summary.failed == 0
    assert report.fleet.environments_created == report.fleet.peak_environments == 6
    assert sorted(r.environment for r in report.records) == [1, 2, 3, 4, 5, 6]
    assert len(_pids(report)) == 6


def test_concurrency_one_is_one_environment(write_handler):
    root = write_handler("app", HANDLERS)
    report = _soak("app.ok", 20, concurrency=1, handler_dir=root, keep_responses=True)
    assert report.summary.failed == 0
    assert report.fleet.environments_created == report.fleet.peak_environments == 1
    assert len(_pids(report)) == 1


def test_each_environment_is_reset_on_its_own(write_handler):
    root = write_handler("app", HANDLERS)
    report = _soak("app.crash_third", 40, concurrency=3, handler_dir=root)
    crashes = [r for r in report.records if r.outcome == "crash"]
    assert crashes
    assert all(r.reset_reason == "crash" for r in crashes)
    # each crash threw away one environment and only that one: a new one replaced it in
    # its slot (unless the soak ended first: at most one per slot, of 3), and every
    # environment served at most its own three invocations
    fleet = report.fleet
    assert len(crashes) - 3 <= fleet.environments_replaced <= len(crashes)
    assert fleet.environments_created - fleet.environments_replaced <= 3
    assert fleet.environments_created == report.summary.cold_starts
    per_env: dict[int, int] = {}
    for r in report.records:
        per_env[r.environment] = per_env.get(r.environment, 0) + 1
    assert max(per_env.values()) <= 3
    assert {r.environment for r in crashes} <= set(per_env)
    assert report.failed  # the CLI exits 1 on it
    assert report.summary.failures_by_type == {"Runtime.ExitError": len(crashes)}


@pytest.mark.parametrize(
    ("options", "wanted"),
    [
        ({"concurrency": 0}, "concurrency=0 is not accepted: expected an integer >= 1"),
        ({"concurrency": True}, "concurrency=True is not accepted"),
        ({"concurrency": 2, "ramp_s": -1}, "ramp_s=-1 is not accepted"),
        ({"concurrency": 1, "ramp_s": 5}, "ramp_s=5 is not accepted with concurrency=1"),
        ({"concurrency": 2, "idle_s": 0}, "idle_s=0 is not accepted"),
        ({"concurrency": 2, "idle_s": float("nan")}, "idle_s=nan is not accepted"),
    ],
)
def test_bad_fleet_options_name_the_setting(write_handler, options, wanted):
    root = write_handler("app", HANDLERS)
    with pytest.raises(ValueError, match="is not accepted") as excinfo:
        _soak("app.ok", 5, handler_dir=root, **options)
    assert wanted in str(excinfo.value)


def test_idle_freezes_every_environment_mid_run(write_handler, tmp_path):
    root = write_handler("app", HANDLERS)
    (tmp_path / "seen").mkdir()
    report = _soak(
        "app.barrier",
        40,
        concurrency=3,
        idle_s=0.5,
        event={"dir": str(tmp_path / "seen"), "want": 3},
        handler_dir=root,
        keep_responses=True,
    )
    assert report.summary.failed == 0
    assert report.fleet.idle_after == 20
    assert report.idle_window is not None
    start, end = report.idle_window
    # nothing ran during the freeze: every invocation sent before it had ended (and the
    # first 20 were sent before it, the last 20 after)
    first_half = [
        (t, t + r.duration_ms / 1000)
        for r, t in zip(report.records, report.started_s, strict=True)
        if r.index < 20
    ]
    assert all(sent_end <= start for _, sent_end in first_half)
    assert all(
        t >= end for r, t in zip(report.records, report.started_s, strict=True) if r.index >= 20
    )
    # the same environments, thawed, served the second half
    assert report.fleet.environments_created == 3


def test_ramp_lets_callers_join_one_by_one(write_handler, tmp_path):
    root = write_handler("app", HANDLERS)
    (tmp_path / "seen").mkdir()
    # caller k of 3 joins at 0.3 * k / 2 s; the barrier holds the second and third
    # environments' first requests until three exist, so the third must be there
    report = _soak(
        "app.barrier",
        200,  # at least 1 s of work for the first caller alone: all three join
        concurrency=3,
        ramp_s=0.3,
        event={"dir": str(tmp_path / "seen"), "want": 3, "sleep_s": 0.005},
        handler_dir=root,
        keep_responses=True,
    )
    assert report.summary.failed == 0
    assert not [r for r in report.records if r.response.get("barrier")]
    assert report.fleet.ramp_s == 0.3
    assert report.fleet.peak_environments == report.fleet.environments_created == 3
    # an environment exists only once as many callers have joined: the k-th (from 0) was
    # started by a request sent no earlier than caller k's join time
    cold = sorted(t for r, t in zip(report.records, report.started_s, strict=True) if r.cold_start)
    assert len(cold) == 3
    for k, sent in enumerate(cold):
        assert sent >= 0.3 * k / 2, (k, sent)


def test_a_ramp_longer_than_the_work_ends_with_the_work(write_handler):
    # GIVEN 20 quick invocations and a ramp that would let the last caller join at 30 s
    root = write_handler("app", HANDLERS)
    started = time.monotonic()
    report = _soak("app.ok", 20, concurrency=4, ramp_s=90.0, handler_dir=root)
    # THEN the soak ends when the work does, with every invocation done by the callers
    # that had joined: the others never started an environment
    assert time.monotonic() - started < 20
    assert report.summary.failed == 0 and len(report.records) == 20
    assert report.fleet.environments_created == 1
    assert report.stopped_early is None


def test_init_failures_in_a_row_stop_the_fleet(write_handler):
    root = write_handler("broken", "import no_such_module_here\n")
    report = _soak("broken.handler", 500, concurrency=3, handler_dir=root)
    assert report.stopped_early is not None
    assert report.stopped_early.startswith("Init failed 10 times in a row")
    # the callers stop asking: at most the requests in flight when it stopped follow,
    # one per caller (in a shard, the caller whose record stopped the fleet may have
    # sent its next before that record reached this process)
    assert 10 <= len(report.records) <= 10 + 3
    assert all(r.reset_reason == "init_error" for r in report.records)
    assert report.fleet.environments_created == len(report.records)


CONTINUED = """
    import os
    import signal

    THAWS = [0]
    signal.signal(signal.SIGCONT, lambda *_: THAWS.__setitem__(0, THAWS[0] + 1))

    def handler(event, context):
        return {"pid": os.getpid(), "thaws": THAWS[0]}
"""


def test_back_to_back_invocations_go_to_the_same_environment_without_a_freeze(write_handler):
    # GIVEN a handler that counts the SIGCONTs its runtime got (one per thaw)
    root = write_handler("thaws", CONTINUED)
    # WHEN 3 callers soak it: each has its next request ready as soon as one ends
    report = _soak("thaws.handler", 60, concurrency=3, handler_dir=root, keep_responses=True)
    # THEN each environment served its caller's requests back to back, as a warm one
    # does under steady load: no freeze and thaw between them (at most the one after
    # Init), though every one of its invocations was its own
    assert report.summary.failed == 0
    assert [r.index for r in report.records] == list(range(60))
    thaws: dict[int, list[int]] = {}
    for r in report.records:
        thaws.setdefault(r.environment, []).append(r.response["thaws"])
    assert report.fleet.environments_created == len(thaws) <= 3
    assert all(max(counts) <= 1 for counts in thaws.values()), thaws
    assert sum(len(counts) for counts in thaws.values()) == 60
    # AND nothing was dispatched that no caller asked for: every end is a spin-down
    assert {s.reason for s in report.shutdowns} == {"spindown"}
    # AND each start time is its dispatch: sent in order, none before the soak began
    assert all(t >= 0 for t in report.started_s)


PARENT = """
    import os

    def handler(event, context):
        return {"supervisor": os.getppid(), "pid": os.getpid()}
"""


@pytest.mark.parametrize("shards", [1, 2])
def test_shards_serve_the_environments_from_processes_of_their_own(write_handler, shards):
    # GIVEN a handler that reports which process started its runtime
    root = write_handler("parent", PARENT)
    # WHEN 4 callers soak it over `shards` supervisor processes
    report = _soak(
        "parent.handler", 80, concurrency=4, handler_dir=root, keep_responses=True, shards=shards
    )
    # THEN every invocation is recorded here, in order, from every shard
    assert report.summary.failed == 0
    assert [r.index for r in report.records] == list(range(80))
    supervisors = {r.response["supervisor"] for r in report.records}
    if shards == 1:  # every runtime is this process's child
        assert supervisors == {os.getpid()}
    else:  # two supervisor processes, neither this one, each with its environments
        assert len(supervisors) == 2 and os.getpid() not in supervisors
    # AND the environments are numbered once each over the fleet, all alive at once
    by_env: dict[int, set[int]] = {}
    for r in report.records:
        by_env.setdefault(r.environment, set()).add(r.response["pid"])
    assert sorted(by_env) == list(range(1, report.fleet.environments_created + 1))
    assert all(len(pids) == 1 for pids in by_env.values())
    assert report.fleet.peak_environments == report.fleet.environments_created <= 4
    assert sorted(s.environment for s in report.shutdowns) == sorted(by_env)
    # AND the shards reported their own CPU and memory, which the table shows
    fleet = report.fleet
    assert fleet.shards == shards
    if shards == 1:
        assert fleet.shard_cpu_s is None and fleet.shard_peak_rss_bytes is None
    else:
        assert fleet.shard_cpu_s is not None and fleet.shard_cpu_s > 0
        assert fleet.shard_peak_rss_bytes is not None and fleet.shard_peak_rss_bytes > 2**20
        assert dict(fleet_rows(fleet))["supervisor shards (peak RSS)"].startswith("2 x ")
    # AND no supervisor process is left
    for pid in supervisors - {os.getpid()}:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def test_bad_shards_name_the_setting(write_handler):
    root = write_handler("app", HANDLERS)
    with pytest.raises(ValueError, match="shards=0 is not accepted: expected None"):
        _soak("app.ok", 5, concurrency=2, handler_dir=root, shards=0)


def test_records_stay_compact(write_handler):
    """What the supervisor keeps per invocation, failures included (identical ones share
    their type, message, stack and response): in columns, about 70 bytes each (an object
    per record was about 360, a failure's about 860), so 10,000 invocations x 50
    environments stay small."""
    root = write_handler("app", HANDLERS)

    def kept(handler: str, n: int) -> tuple[int, FleetReport]:
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            report = _soak(handler, n, concurrency=4, handler_dir=root)
            gc.collect()
            return tracemalloc.get_traced_memory()[0] - before, report
        finally:
            tracemalloc.stop()

    kept("app.ok", 10)  # imports and caches paid once, outside the measurement
    for handler, bound in (("app.ok", 150), ("app.fail_long", 200)):
        small, small_report = kept(handler, 50)
        large, large_report = kept(handler, 250)
        per_record = (large - small) / 200
        assert len(large_report.records) == 250
        # a failure's 2,000-character message, kept unshared in the record and in its
        # response, alone would be 4 KB; its response dict alone about 300 bytes
        assert per_record < bound, (handler, per_record)
    assert len({id(r.error_message) for r in large_report.records}) == 1
    assert large_report.summary.failed == 250
    del small_report


def _retrying_handler(port: int) -> str:
    return f"""
    from lambda_conn import RDSConnector
    from lambda_conn._rds.retry import Retry

    RDS = RDSConnector(
        "127.0.0.1", port={port}, user="u", password="p", tls=False,
        retry=Retry(attempts=3, base_delay=0.001, max_delay=0.002),
    )

    def handler(event, context):
        RDS.connect(context).close()
    """


def test_rds_connector_retries_are_counted_from_the_output(write_handler):
    import socket

    with socket.socket() as probe:  # a port nobody listens on: 2003, retried
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = write_handler("rdsapp", _retrying_handler(port))
    report = _soak("rdsapp.handler", 6, concurrency=2, handler_dir=root)
    assert report.summary.failed == 6
    # three attempts each: two retries logged per invocation, code 2003
    assert report.fleet.rds_retries == 12
    assert report.fleet.rds_retries_by_code == {"2003": 12}


def test_too_many_connections_has_a_row_of_its_own():
    from lambda_conn.local import InvocationRecord

    def failed(error_type: str, message: str) -> InvocationRecord:
        return InvocationRecord(
            0,
            "id",
            "function_error",
            error_type,
            message,
            None,
            None,
            1.0,
            1.0,
            False,
            None,
            None,
            None,
            False,
            None,
            None,
            None,
            1,
        )

    assert (
        fleet_failure_kind(failed("OperationalError", "(1040, 'Too many connections')"))
        == "OperationalError (too many connections)"
    )
    assert (
        fleet_failure_kind(failed("OperationalError", "FATAL:  sorry, too many clients already"))
        == "OperationalError (too many connections)"
    )
    assert fleet_failure_kind(failed("OperationalError", "(2003, 'refused')")) == (
        "OperationalError"
    )
    # psycopg's own class for SQLSTATE 53300, and the code where it is labelled as one
    for error_type, message in [
        ("TooManyConnections", "connection failed"),
        ("DBAPIError", "SQLSTATE 53300: no slot"),
        ("OperationalError", "server said [53300]"),
    ]:
        assert fleet_failure_kind(failed(error_type, message)).endswith("(too many connections)")
    # the digits alone are a port (or a count), not the server running out
    refused = (
        'connection failed: connection to server at "127.0.0.1", port 53300 failed: '
        "Connection refused"
    )
    assert fleet_failure_kind(failed("OperationalError", refused)) == "OperationalError"


# ------------------------------------------------------------------ processes


CHILDREN = """
    import os
    import subprocess
    import time

    # every environment starts a child at Init, in its process group, as a handler may
    CHILD = subprocess.Popen(["sleep", "600"])
    SEEN = []

    def handler(event, context):
        # four environments at once: each new one but the first waits for the others
        SEEN.append(1)
        root = event["dir"]
        if len(SEEN) == 1:
            with open(os.path.join(root, str(os.getpid())), "w"):
                pass
            deadline = time.monotonic() + 20
            while 1 < len(os.listdir(root)) < 4 and time.monotonic() < deadline:
                time.sleep(0.005)
        time.sleep(0.05)
        return {"pid": os.getpid()}

    def slow(event, context):
        with open(os.path.join(event["dir"], str(os.getpid())), "w"):
            pass
        time.sleep(60)
"""


def _wait_for(predicate, what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {limit:g} s for {what}")
        time.sleep(0.05)


def _cli() -> list[str]:
    return [sys.executable, "-m", "lambda_conn.cli"]


def _start_fleet(
    root: Path,
    seen: Path,
    mark: str,
    *extra: str,
    capture: bool = True,
    handler: str = "kids.handler",
    options: tuple[str, ...] = ("-n", "40", "--idle", "600"),
) -> subprocess.Popen[bytes]:
    (root / "event.json").write_text(f'{{"dir": "{seen}"}}')
    return subprocess.Popen(
        [
            *_cli(),
            "soak",
            handler,
            *options,
            "--concurrency",
            "4",
            "--event",
            "event.json",
            "--env",
            f"{MARK}={mark}",
            *extra,
        ],
        cwd=root,
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
        stderr=subprocess.PIPE if capture else subprocess.DEVNULL,
    )


def test_ctrl_c_prints_the_table_and_leaves_no_process(write_handler, tmp_path, mark):
    root = write_handler("kids", CHILDREN)
    seen = tmp_path / "seen"
    seen.mkdir()
    proc = _start_fleet(root, seen, mark)
    try:
        # four environments and their four children up, all frozen by --idle
        _wait_for(lambda: len(os.listdir(seen)) >= 4, "four environments")
        _wait_for(
            lambda: [s for _, s in marked(mark)] == ["T"] * 8,
            "four runtimes and four children, frozen",
        )
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err.decode()
    text = out.decode()
    assert "concurrency 4, idle 600 s" in text.splitlines()[1]
    assert "environments created" in text and "peak concurrent environments" in text
    # nothing survives: no runtime, no child, nothing left frozen
    assert marked(mark) == []


def test_ctrl_c_kills_the_invocations_in_flight(write_handler, tmp_path, mark):
    """Four requests that would run for a minute: Ctrl-C ends them at once, and nothing
    survives. Killed by the supervisor, they are not the function's failures: counted as
    interrupted, not recorded (a single-environment soak drops the one it was running)."""
    root = write_handler("kids", CHILDREN)
    seen = tmp_path / "seen"
    seen.mkdir()
    options = ("-n", "100", "--timeout", "120", "--json", "out.json")
    proc = _start_fleet(root, seen, mark, handler="kids.slow", options=options)
    try:
        _wait_for(lambda: len(os.listdir(seen)) >= 4, "four requests in flight")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err.decode()
    data = json.loads((root / "out.json").read_text())
    assert data["stopped_early"] == "interrupted"
    assert data["records"] == []  # none had ended: every one was cut short
    assert data["fleet"]["interrupted_in_flight"] >= 4
    # their environments still count, each with its number, and each shut down
    created = data["fleet"]["environments_created"]
    assert created >= 4 and data["fleet"]["peak_environments"] >= 4
    assert sorted(s["environment"] for s in data["shutdowns"]) == list(range(1, created + 1))
    assert data["summary"]["failed"] == 0
    table = out.decode()
    assert "Runtime.ExitError" not in table
    assert "interrupted in flight (not recorded)" in table
    assert marked(mark) == []


def test_runtimes_die_with_a_killed_supervisor(write_handler, tmp_path, mark):
    """Frozen runtimes forked from the fleet's caller threads die with a SIGKILLed
    supervisor (PR_SET_PDEATHSIG; a running one would also die of its runtime API gone),
    and so do their frozen children, which have no death signal: the supervisor's reaper
    (lambda_conn/local/_reaper.py) SIGKILLs every environment's process group."""
    root = write_handler("kids", CHILDREN)
    seen = tmp_path / "seen"
    seen.mkdir()
    proc = _start_fleet(root, seen, mark, "--quiet", capture=False)
    try:
        _wait_for(lambda: len(os.listdir(seen)) >= 4, "four environments")
        runtimes = {int(p) for p in os.listdir(seen)}
        _wait_for(
            lambda: [s for _, s in marked(mark)] == ["T"] * 8,
            "four runtimes and four children, frozen",
        )
        proc.kill()  # SIGKILL: no cleanup of ours runs
        proc.wait()
        _wait_for(
            lambda: not runtimes & {pid for pid, _ in marked(mark)}, "the runtimes to die", 10
        )
        _wait_for(lambda: marked(mark) == [], "their children to die", 10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_concurrency_zero_names_the_option(write_handler):
    root = write_handler("app", HANDLERS)
    result = subprocess.run(
        [*_cli(), "soak", "app.ok", "-n", "3", "--concurrency", "0"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "argument -c/--concurrency: '0' is not accepted: expected an integer >= 1" in (
        result.stderr
    )


def test_cli_fleet_json_and_exit_status(write_handler, tmp_path):
    root = write_handler("app", HANDLERS)
    result = subprocess.run(
        [*_cli(), "soak", "app.crash_third", "-n", "20", "-c", "2", "--json", "out.json", "-q"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    data = json.loads((tmp_path / "out.json").read_text())
    fleet = data["fleet"]
    assert fleet["concurrency"] == 2
    assert fleet["environments_created"] == data["summary"]["cold_starts"]
    assert fleet["peak_environments"] <= 2
    for key in ("too_many_connections", "rds_retries", "supervisor_rss_end_bytes"):
        assert key in fleet
    assert len(data["records"]) == 20
    assert all("started_s" in r for r in data["records"])
    assert "peak concurrent environments" in result.stdout
