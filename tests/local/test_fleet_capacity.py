"""A fleet refuses a concurrency this machine or the supervisor cannot hold, with the number.

Memory: measured on the first invocation when the fleet at its memory size would not fit
in the memory available, then on every invocation (the largest resident size seen).
Descriptors: each environment holds some of the supervisor's; the supervisor raises its
soft RLIMIT_NOFILE up to the hard limit when the fleet needs it, refuses before the first
invocation what the hard limit cannot hold, and again once an environment measured holds
more than assumed. The descriptor cases run in a subprocess with a low limit of its own.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lambda_conn.local import CapacityError, FleetReport, fleet_soak
from lambda_conn.local._capacity import available_memory

pytestmark = pytest.mark.timeout(180)

HANDLERS = """
    import os
    import time

    if os.environ.get("STARTED_DIR"):  # every Init leaves its mark
        open(os.path.join(os.environ["STARTED_DIR"], str(os.getpid())), "w").close()
    if os.environ.get("WITH_EXTENSION"):  # parks a second connection in /event/next
        from lambda_conn._guard.extension import register

        register(os.environ["AWS_LAMBDA_RUNTIME_API"], "capacity-test")
    # resident from Init on: written, not only reserved
    AT_INIT = b"x" * int(os.environ.get("ALLOCATE_AT_INIT", "0"))
    CALLS = []
    GROWN = []

    def ok(event, context):
        return 1

    def grows(event, context):
        # small after its first invocation, large from its second on
        CALLS.append(1)
        if len(CALLS) == 2:
            GROWN.append(b"x" * int(os.environ["GROW_BYTES"]))
        return len(CALLS)

    def barrier(event, context):
        # each environment's first invocation waits until event["want"] exist at once
        CALLS.append(1)
        root = event["dir"]
        if len(CALLS) == 1:
            open(os.path.join(root, str(os.getpid())), "w").close()
            deadline = time.monotonic() + 30
            while len(os.listdir(root)) < event["want"]:
                if time.monotonic() > deadline:
                    return "timed out"
                time.sleep(0.005)
        return "ok"
"""

# The descriptor limit the subprocesses run under: a soft limit far too low for their
# fleets, and Lambda's 1,024 as the hard limit (each runtime gets 1,024, which needs a
# hard limit at least that high in an unprivileged supervisor).
SOFT, HARD = 32, 1024


def _soak(handler: str, n: int, **options: Any) -> FleetReport:
    return fleet_soak(handler, n, output=subprocess.DEVNULL, **options)


def _limited(
    root: Path,
    code: str,
    timeout: float = 120,
    *,
    limits: tuple[int, int] = (SOFT, HARD),
    args: tuple[str, ...] = (),
    unprivileged: bool = False,
) -> subprocess.CompletedProcess[str]:
    """``code`` (given ``args``) in a Python whose RLIMIT_NOFILE is ``limits``, in the task
    root; ``unprivileged``: as root, without CAP_SYS_RESOURCE (it may not raise the limit)."""
    prologue = f"import resource\nresource.setrlimit(resource.RLIMIT_NOFILE, {limits})\n"
    prefix = (
        ["setpriv", "--bounding-set=-sys_resource"] if unprivileged and os.geteuid() == 0 else []
    )
    return subprocess.run(
        [*prefix, sys.executable, "-c", prologue + code, *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _fit(message: str) -> int:
    return int(message.split("at most ", 1)[1].split(" environments fit", 1)[0])


def test_concurrency_above_what_memory_holds_is_refused_with_the_number(write_handler):
    root = write_handler("app", HANDLERS)
    available = available_memory()
    assert available is not None
    allocate = available // 80  # so fewer than 80 environments fit, whatever the machine
    memory_mb = math.ceil(2 * allocate / 2**20) + 128
    with pytest.raises(CapacityError) as excinfo:
        _soak(
            "app.ok",
            5,
            concurrency=120,
            handler_dir=root,
            memory_mb=memory_mb,
            env={"ALLOCATE_AT_INIT": str(allocate)},
        )
    message = str(excinfo.value)
    assert "concurrency=120 is not accepted: one environment of app.ok uses" in message
    assert "MB (resident, measured after its first invocation)" in message
    assert "environments fit in this machine's memory" in message
    fit = int(message.rsplit("from 1 to ", 1)[1])
    assert fit == _fit(message)
    assert 1 <= fit < 80


def test_an_environment_growing_after_its_first_invocation_is_refused(write_handler):
    """The first invocation's resident size fits 120 environments; the second one's does
    not: the fleet stops there (the other callers, joining a second apart, never did)."""
    root = write_handler("app", HANDLERS)
    available = available_memory()
    assert available is not None
    grow = available // 80
    with pytest.raises(CapacityError) as excinfo:
        _soak(
            "app.grows",
            3,
            concurrency=120,
            ramp_s=120,
            handler_dir=root,
            memory_mb=math.ceil(2 * grow / 2**20) + 128,
            env={"GROW_BYTES": str(grow)},
        )
    message = str(excinfo.value)
    assert "concurrency=120 is not accepted: one environment of app.grows uses up to" in message
    assert "(resident, the most measured in 1 environment after 2 invocations)" in message
    assert 1 <= _fit(message) < 80


def test_cli_refuses_before_any_invocation_what_the_hard_descriptor_limit_cannot_hold(
    write_handler, tmp_path
):
    root = write_handler("app", HANDLERS)
    started = tmp_path / "started"
    started.mkdir()
    argv = ["lambda-conn", "soak", "app.ok", "-n", "3", "-c", "500", "-q"]
    argv += ["--env", f"STARTED_DIR={started}"]
    result = _limited(
        root,
        f"import runpy, sys\nsys.argv = {argv!r}\nrunpy.run_module('lambda_conn.cli', "
        "run_name='__main__')\n",
    )
    assert result.returncode == 2, result.stderr
    err = " ".join(result.stderr.split())
    assert (
        "argument --concurrency: concurrency=500 is not accepted: each environment of app.ok "
        "holds 6 of the supervisor's descriptors" in err
    )
    assert f"RLIMIT_NOFILE's hard limit is {HARD} (the soft limit is raised up to it)" in err
    open_before = int(err.split(" were open before the first")[0].rsplit(" ", 1)[1])
    fit = _fit(err)
    assert fit == (HARD - open_before - 16) // 6
    assert f"expected a concurrency from 1 to {fit}, or a higher hard limit" in err
    assert os.listdir(started) == []  # refused before any environment started
    assert result.stdout == ""


def test_a_fleet_above_the_soft_descriptor_limit_runs_after_raising_it(write_handler, tmp_path):
    """Eight environments at once hold more descriptors than a soft limit of 32: the
    supervisor raises it to the hard limit for the soak, and puts it back afterwards."""
    root = write_handler("app", HANDLERS)
    seen = tmp_path / "seen"
    seen.mkdir()
    code = f"""
import json, subprocess
from lambda_conn.local import fleet_soak
during = set()
report = fleet_soak(
    "app.barrier", 24, concurrency=8, event={{"dir": {str(seen)!r}, "want": 8}},
    keep_responses=True, output=subprocess.DEVNULL,
    progress=lambda done, record: during.add(resource.getrlimit(resource.RLIMIT_NOFILE)),
)
print(json.dumps({{
    "failures": report.summary.failures_by_type,
    "responses": sorted({{r.response for r in report.records}}),
    "peak": report.fleet.peak_environments,
    "during": sorted(during),
    "after": resource.getrlimit(resource.RLIMIT_NOFILE),
}}))
"""
    result = _limited(root, code)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["failures"] == {}
    assert out["responses"] == ["ok"]  # no barrier timed out: all eight existed at once
    assert out["peak"] == 8
    assert out["during"] == [[HARD, HARD]]
    assert out["after"] == [SOFT, HARD]


def test_an_environment_holding_more_descriptors_than_assumed_is_refused(write_handler):
    """With an extension each environment holds one connection more (7, not 6): 150 of
    them fit a hard limit of 1,024 at 6 each, not at 7. The first environment measured
    stops the fleet before the next caller joins (a second later, by the ramp)."""
    root = write_handler("app", HANDLERS)
    code = """
import subprocess
from lambda_conn.local import CapacityError, fleet_soak
try:
    fleet_soak(
        "app.ok", 3, concurrency=150, ramp_s=150, env={"WITH_EXTENSION": "1"},
        output=subprocess.DEVNULL,
    )
except CapacityError as exc:
    print("refused:", exc)
print("after", resource.getrlimit(resource.RLIMIT_NOFILE))
"""
    result = _limited(root, code)
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert (
        "refused: concurrency=150 is not accepted: each environment of app.ok holds 7 of "
        "the supervisor's descriptors (the most measured, in 1 environment:" in out
    )
    open_before = int(out.split(" were open before the first")[0].rsplit(" ", 1)[1])
    assert _fit(out) == (HARD - open_before - 16) // 7 < 150
    assert out.endswith(f"after ({SOFT}, {HARD})")


@pytest.mark.parametrize("concurrency", [1, 2])
def test_a_hard_descriptor_limit_below_lambdas_is_said_plainly(write_handler, concurrency):
    """A supervisor whose hard RLIMIT_NOFILE is below Lambda's 1,024 and which may not raise
    it (not privileged: as root, CAP_SYS_RESOURCE is dropped) cannot give a runtime Lambda's
    limit: ``soak`` says so and exits 2 before any invocation, with no traceback."""
    root = write_handler("app", HANDLERS)
    low = 256
    cli = "import sys; from lambda_conn.cli import main; sys.exit(main(sys.argv[1:]))"
    done = _limited(
        root,
        cli,
        limits=(low, low),
        args=("soak", "app.ok", "-n", "3", "--concurrency", str(concurrency)),
        unprivileged=True,
    )
    assert done.returncode == 2, done.stderr
    assert f"lambda-conn soak: RLIMIT_NOFILE's hard limit here is {low}, below the 1024" in (
        done.stderr
    )
    assert "ulimit -Hn 1024" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_memory_probe_is_judged_before_any_other_environment_starts(
    write_handler, tmp_path, monkeypatch
):
    """Over shards the first record reaches this process's collector, which checks it
    against the memory: no other caller may start before that check has refused (it
    used to be let go once the record was counted, before the check: here the check is
    slowed, so that any caller let go meanwhile starts an environment)."""
    import time

    from lambda_conn.local import _capacity

    real = _capacity.Capacity.observe
    calls: list[int] = []

    def slow_observe(self: Any, rss: int | None, descriptors: int | None) -> Any:
        calls.append(1)
        if len(calls) == 1:  # the probe's record
            time.sleep(0.5)
        return real(self, rss, descriptors)

    monkeypatch.setattr(_capacity.Capacity, "observe", slow_observe)
    root = write_handler("app", HANDLERS)
    started = tmp_path / "started"
    started.mkdir()
    available = available_memory()
    assert available is not None
    allocate = available // 80
    with pytest.raises(CapacityError, match="concurrency=120 is not accepted"):
        _soak(
            "app.ok",
            50,
            concurrency=120,
            shards=2,
            handler_dir=root,
            memory_mb=math.ceil(2 * allocate / 2**20) + 128,
            env={"ALLOCATE_AT_INIT": str(allocate), "STARTED_DIR": str(started)},
        )
    assert len(os.listdir(started)) == 1  # the probe's environment alone
