"""The supervisor's own mechanics: it serves the API from the waiting thread, wakes on the
runtime's exit through its pidfd, and measures descriptors exactly."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import pytest

from lambda_conn.local._api_server import RuntimeApiServer
from lambda_conn.local._constants import SPIN_S
from lambda_conn.local._soak import spin_s
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


class _RecordingPoll:
    """A ``select.poll`` that remembers the timeout of every ``poll`` call."""

    def __init__(self, poll: select.poll) -> None:
        self._poll = poll
        self.timeouts: list[float | None] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._poll, name)

    def poll(self, timeout: float | None = None) -> list[tuple[int, int]]:
        self.timeouts.append(timeout)
        return self._poll.poll(timeout)


@pytest.fixture
def spinning_server() -> Iterator[Callable[[float], tuple[RuntimeApiServer, _RecordingPoll]]]:
    """Make a server that spins ``spin_s`` before it sleeps, with its polls recorded."""
    servers: list[RuntimeApiServer] = []

    def make(spin_s: float) -> tuple[RuntimeApiServer, _RecordingPoll]:
        metadata = FunctionMetadata("f", "$LATEST", "app.handler")
        server = RuntimeApiServer(SandboxState(metadata), spin_s)
        servers.append(server)
        recorder = _RecordingPoll(server._poll)
        server._poll = recorder  # type: ignore[assignment]
        return server, recorder

    yield make
    for server in servers:
        server.stop()


def test_a_spinning_server_serves_what_arrives_meanwhile_without_sleeping(spinning_server):
    # GIVEN a server that spins up to 10 s before it sleeps, and a client that connects
    server, recorder = spinning_server(10.0)
    with socket.create_connection(("127.0.0.1", int(server.address.split(":")[1]))):
        # WHEN it is pumped with a minute to wait
        server.pump(60.0)
        # THEN it took the connection from a poll that did not sleep
        assert server.connection_count() == 1
        assert recorder.timeouts and set(recorder.timeouts) == {0}


def test_a_spinning_server_sleeps_for_the_rest_of_the_wait_when_nothing_came(spinning_server):
    # GIVEN a server that spins 20 ms before it sleeps, and nothing that will arrive
    server, recorder = spinning_server(0.02)
    # WHEN it is pumped for 100 ms
    assert server.pump(0.1) is False
    # THEN it polled without sleeping, then slept once for what was left of the wait
    assert recorder.timeouts[0] == 0
    assert 0 < recorder.timeouts[-1] <= 80 + 1e-6
    assert recorder.timeouts.count(0) == len(recorder.timeouts) - 1


def test_a_server_that_does_not_spin_sleeps_at_once(spinning_server):
    server, recorder = spinning_server(0.0)
    assert server.pump(0.01) is False
    assert recorder.timeouts == [10.0]


@pytest.mark.parametrize(
    ("spin", "cores", "expected"), [(True, {0, 1}, SPIN_S), (True, {0}, 0.0), (False, {0, 1}, 0.0)]
)
def test_a_soak_spins_only_where_it_has_two_cores(monkeypatch, spin, cores, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: cores)
    assert spin_s(spin) == expected


def test_spin_must_be_a_bool():
    with pytest.raises(ValueError, match=r"spin='yes' is not accepted: expected True or False"):
        spin_s("yes")


@pytest.mark.parametrize("spin", [True, False])
def test_a_soak_spins_in_the_real_runtime_unless_told_not_to(write_handler, monkeypatch, spin):
    # GIVEN every server's spin counted, on a machine with two cores
    from lambda_conn.local import soak

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    spins: list[float] = []
    original = RuntimeApiServer._spin

    def counted(self: RuntimeApiServer, timeout: float | None) -> list[tuple[int, int]]:
        spins.append(self.spin_s)
        return original(self, timeout)

    monkeypatch.setattr(RuntimeApiServer, "_spin", counted)
    root = write_handler("app", HANDLERS)
    # WHEN a handler is soaked
    report = soak("app.handler", 20, handler_dir=root, output=subprocess.DEVNULL, spin=spin)
    # THEN every invocation succeeded, its API spinning SPIN_S at a time unless spin=False
    assert report.summary.failed == 0 and len(report.records) == 20
    assert set(spins) == ({SPIN_S} if spin else set())
    if spin:
        assert len(spins) >= 20
