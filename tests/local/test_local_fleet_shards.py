"""Fleet shards (one supervisor process per core) when things go wrong: a shard killed,
Ctrl-C while they are forked, the --idle freeze over every shard.

Each fleet runs in a Python of its own (``_SCRIPT``), with ``shards=2`` whatever the
machine's cores, so that a hang is a timeout here and not a stuck test session, and so
that "no process left" is checked from outside: by pid and process group in /proc.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.processes import MARK, in_groups, marked, state

pytestmark = pytest.mark.timeout(180)


HANDLERS = """
    import os
    import signal
    import subprocess
    import time

    # every environment starts a child at Init, in its process group, as a handler may
    CHILD = subprocess.Popen(["sleep", "600"])
    ROOT = os.environ["SEEN_DIR"]
    with open(os.path.join(ROOT, str(os.getpid())), "w") as fh:
        fh.write(str(os.getppid()))  # the shard that started this runtime
    THAWS = [0]
    signal.signal(signal.SIGCONT, lambda *_: THAWS.__setitem__(0, THAWS[0] + 1))

    def handler(event, context):
        time.sleep((event or {}).get("sleep_s", 0))
        return {"pid": os.getpid(), "supervisor": os.getppid(), "thaws": THAWS[0],
                "t": time.monotonic()}
"""

# Runs one fleet; writes what it returned or raised, and which of its descendants are
# left once it did (zombies too), as JSON to argv[2]. argv[1]: the fleet's options as JSON.
_SCRIPT = """
import json, os, signal, subprocess, sys
from lambda_conn.local import FleetInterrupted, fleet_soak

options = json.loads(sys.argv[1])
hooks = options.pop("hooks", None)
PARENT = os.getpid()
forks = []
if hooks in ("parent", "group"):  # a real SIGINT as soon as the first shard is forked
    import multiprocessing.process

    real_start = multiprocessing.process.BaseProcess.start
    fired = []

    def start(self):
        real_start(self)
        if not fired:
            fired.append(1)
            if hooks == "group":  # the new shard too, as a terminal's Ctrl-C reaches both
                os.kill(self.pid, signal.SIGINT)
            os.kill(PARENT, signal.SIGINT)

    multiprocessing.process.BaseProcess.start = start
elif hooks == "census":  # at each shard's fork: this process's threads, the shards' children
    import multiprocessing, threading

    def before():
        if os.getpid() == PARENT:
            shards = [p.pid for p in multiprocessing.active_children()]
            forks.append({
                "threads": sorted(t.name for t in threading.enumerate()),
                "children_of_shards": sorted(c for s in shards for c in descendants(s)),
            })

    os.register_at_fork(before=before)

def descendants(pid):
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as fh:
                    children = [int(c) for c in fh.read().split()]
            except OSError:
                continue
            for child in children:
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


result = {}
try:
    report = fleet_soak(output=subprocess.DEVNULL, **options)
except FleetInterrupted as exc:
    report = exc.report
    result["interrupted"] = True
except BaseException as exc:
    report = None
    result["error"] = repr(exc)
if report is not None:
    result.update(
        stopped_early=report.stopped_early,
        indices=[r.index for r in report.records],
        failed=report.summary.failed,
        environments=report.fleet.environments_created,
        idle_after=report.fleet.idle_after,
        idle_window=report.idle_window,
        responses=[r.response for r in report.records],
        started_s=list(report.started_s),
        shutdowns=[s.reason for s in report.shutdowns],
    )
result["forks"] = forks
# not even a zombie: every process the fleet started was waited for
result["left"] = sorted(descendants(PARENT))
with open(sys.argv[2], "w") as fh:
    json.dump(result, fh)
"""


def _wait_for(predicate: Callable[[], Any], what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {limit:g} s for {what}")
        time.sleep(0.02)


class _Fleet:
    """The script running one fleet of app.handler, 4 callers over 2 shards."""

    def __init__(self, root: Path, mark: str, **options: Any) -> None:
        self.seen = root / "seen"
        self.seen.mkdir()
        self.out = root / "result.json"
        options = {
            "handler": "app.handler",
            "concurrency": 4,
            "shards": 2,
            "handler_dir": str(root),
            "env": {MARK: mark, "SEEN_DIR": str(self.seen)},
            **options,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SCRIPT, json.dumps(options), str(self.out)],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def runtimes(self) -> dict[int, int]:
        """Each runtime started so far, and the shard (its supervisor) that started it."""
        found = {}
        for entry in os.listdir(self.seen):
            text = (self.seen / entry).read_text()
            if text:
                found[int(entry)] = int(text)
        return found

    def result(self, timeout: float = 60) -> dict[str, Any]:
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the fleet did not end within {timeout:g} s") from None
        assert self.proc.returncode == 0, err.decode()[-3000:]
        data: dict[str, Any] = json.loads(self.out.read_text())
        return data

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def fleet(write_handler, mark) -> Iterator[Callable[..., _Fleet]]:
    started: list[_Fleet] = []

    def start(**options: Any) -> _Fleet:
        root = write_handler("app", HANDLERS)
        started.append(_Fleet(root, mark, **options))
        return started[-1]

    yield start
    for f in started:
        f.kill()


def _frozen(mark: str, count: int) -> bool:
    states = [s for _, s in marked(mark)]
    return len(states) == count and set(states) == {"T"}


# ------------------------------------------------------------------ a shard killed


@pytest.mark.parametrize(
    ("when", "which"),
    [("running", 0), ("idle", 0), ("idle", 1)],
    ids=["running", "idle-first-shard", "idle-second-shard"],
)
def test_a_killed_shard_stops_the_fleet_with_what_it_got_and_leaves_nothing(
    fleet, mark, when, which
):
    # GIVEN 4 environments over 2 shards, busy or all frozen by --idle (then one shard's
    # caller sleeps in the freeze, the other's waits for it: both are killed in turn)
    options: dict[str, Any] = {"n": 40, "idle_s": 600}
    if when == "running":
        options = {"n": 100_000, "event": {"sleep_s": 0.01}}
    f = fleet(**options)
    _wait_for(lambda: len(f.runtimes()) == 4, "four environments")
    runtimes = f.runtimes()
    shards = sorted(set(runtimes.values()))
    assert len(shards) == 2
    if when == "idle":
        _wait_for(lambda: _frozen(mark, 8), "four runtimes and their children, frozen")
    else:
        _wait_for(lambda: len(marked(mark)) == 8, "four runtimes and their children")
    # WHEN one shard is SIGKILLed (as the OOM killer does)
    victim = shards[which]
    os.kill(victim, signal.SIGKILL)
    # THEN the fleet ends at once (it used to wait for that shard for ever), with the
    # records it got and why it stopped
    result = f.result(timeout=60)
    assert "error" not in result, result.get("error")
    stopped = result["stopped_early"]
    assert stopped is not None
    assert stopped.startswith(f"fleet shard {which} (pid {victim}) was killed by SIGKILL: ")
    assert "did not end" not in stopped  # the other shard tore down and reported
    assert stopped.endswith(
        "the fleet was stopped; what a shard had not yet sent is not "
        "recorded (its invocations in flight, its environments' shutdowns)"
    )
    indices = result["indices"]
    assert len(indices) == len(set(indices))  # none counted twice
    assert indices == sorted(indices)
    if when == "idle":  # of the first half, all done before the freeze (the killed
        # shard's last 10 ms of records, not yet sent in a batch, may be missing)
        assert indices and set(indices) <= set(range(20))
    # AND no process is left: no shard, no runtime, no child, frozen or running
    assert result["left"] == []
    gone = {pid for pid, shard in runtimes.items() if shard == victim}
    assert not [pid for pid, _ in marked(mark) if pid in runtimes]
    # (the killed shard's children are SIGKILLed by its reaper, which saw it die)
    _wait_for(lambda: marked(mark) == [], "the killed shard's environments' children", 10)
    assert in_groups(set(runtimes)) == []
    assert all(state(pid) in (None, "Z") for pid in [victim, *gone])


# ------------------------------------------------------------------ forking the shards


@pytest.mark.parametrize("who", ["parent", "group"])
def test_ctrl_c_while_the_shards_are_forked_leaves_no_process(fleet, mark, who):
    # GIVEN a fleet whose first shard has just been forked when Ctrl-C comes (a SIGINT
    # sent as the fork returns): to the calling process only, or to the new shard as well
    # (a terminal's Ctrl-C reaches the whole process group; the shard may not yet ignore it)
    f = fleet(n=1000, hooks=who)
    result = f.result(timeout=60)
    # THEN FleetInterrupted with the records so far (none: no shard had begun), every
    # shard and environment gone by the time it is raised
    assert "error" not in result, result.get("error")
    assert result.get("interrupted") is True
    assert result["stopped_early"] == "interrupted"
    assert result["indices"] == []
    assert result["left"] == []
    assert marked(mark) == []


def test_every_shard_is_forked_before_any_record_or_runtime_exists(fleet, mark):
    """A lock another thread holds at a fork stays held for ever in the child: the
    receivers (and the progress hook they call, which writes to stderr) must not run
    while a shard is forked, nor a runtime's output flow into the log tap."""
    f = fleet(n=200, hooks="census")
    result = f.result(timeout=60)
    assert result["failed"] == 0 and len(result["indices"]) == 200
    forks = result["forks"]
    assert len(forks) == 2
    for fork in forks:
        assert "lambda_conn-fleet-receive" not in fork["threads"], fork
        assert fork["children_of_shards"] == [], fork  # no runtime, no reaper yet
    assert result["left"] == []


# ------------------------------------------------------------------ --idle over the shards


def test_idle_freezes_every_shards_environments_once_and_they_resume(fleet, mark):
    # GIVEN 4 environments over 2 shards and a 2 s freeze after half of 40 invocations
    f = fleet(n=40, idle_s=2.0, keep_responses=True, event={"sleep_s": 0.005})
    # THEN at one moment every runtime (and its child) of both shards is frozen
    _wait_for(lambda: len(f.runtimes()) == 4, "four environments")
    _wait_for(lambda: _frozen(mark, 8), "every runtime and child of both shards frozen")
    shards = set(f.runtimes().values())
    result = f.result(timeout=60)
    assert len(shards) == 2
    # AND every invocation ran once, in order, none failed, in the same 4 environments
    assert result["failed"] == 0
    assert result["indices"] == list(range(40))
    assert result["environments"] == 4
    assert {r["supervisor"] for r in result["responses"]} == shards
    assert result["idle_after"] == 20
    start, end = result["idle_window"]
    assert end - start >= 2.0
    # AND the freeze came once, for the whole fleet: nothing sent during it, and one gap
    # of its length between two invocations sent one after the other
    sent = result["started_s"]
    assert all(t <= start for t in sent[:20]) and all(t >= end for t in sent[20:])
    ordered = sorted(sent)
    gaps = [b - a for a, b in itertools.pairwise(ordered)]
    assert len([g for g in gaps if g >= 2.0]) == 1
    # AND each environment that served both halves was thawed from the freeze
    by_env: dict[int, list[tuple[int, int]]] = {}
    for index, r in zip(result["indices"], result["responses"], strict=True):
        by_env.setdefault(r["pid"], []).append((index, r["thaws"]))
    both = [runs for runs in by_env.values() if runs[0][0] < 20 <= runs[-1][0]]
    assert both
    for runs in both:
        before = max(thaws for index, thaws in runs if index < 20)
        after = min(thaws for index, thaws in runs if index >= 20)
        assert after > before, runs
    assert result["left"] == []
    assert marked(mark) == []
