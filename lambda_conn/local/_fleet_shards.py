"""A fleet spread over supervisor processes, one per core: the environments of each are
served by their own interpreter, so the fleet's rate grows with the cores.

Why: one supervisor process serves every environment from its caller threads, and
Python runs one of them at a time. Each invocation costs the supervisor about as much
CPU as the runtime, and the GIL passing between the threads costs more than it saves:
at concurrency 2 the fleet ran barely faster than at 1 on two cores.

How: the process that called ``fleet_soak`` keeps everything a report is made of (the
collector, the sampler, the progress line, Ctrl-C) and forks ``shards`` processes
before any environment starts. Caller ``k`` runs in shard ``k % shards``, with that
shard's environments (Lambda's routing within a shard: a caller that finds every warm
one busy gets a new one; with as many callers as environments the whole fleet routes as
one pool does). Which invocation comes next, when callers join, the ``--idle`` freeze
and the stop are shared memory (``SharedSchedule``), one lock taken per invocation.
Each shard sends its records to the parent in batches over a pipe, and its shutdowns at
the end; the parent numbers environments as the records arrive, as one process does.
A shard dies with the parent (``PR_SET_PDEATHSIG``), and its runtimes with it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import resource
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from lambda_conn.local import _reaper
from lambda_conn.local._fleet_pool import Schedule
from lambda_conn.local._records import InvocationRecord, ShutdownRecord

__all__ = [
    "LiveCounter",
    "RemoteSlot",
    "Shard",
    "SharedFlag",
    "SharedSchedule",
    "make_shared",
    "send_end",
    "shards_for",
]

_BATCH_S = 0.01  # a shard's records reach the parent within this (its progress line)
_BATCH_MAX = 512
_FLAG_POLL_S = 0.005  # how often a SharedFlag.wait looks


def shards_for(concurrency: int, shards: int | None) -> int:
    """How many supervisor processes: one per core the machine has, no more than the
    callers (None); 1 keeps the whole fleet in this process."""
    if shards is not None:
        if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
            raise ValueError(
                f"shards={shards!r} is not accepted: expected None (one supervisor process "
                "per core) or an integer >= 1"
            )
        return min(shards, concurrency)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, concurrency))


class SharedFlag:
    """A shared boolean with ``threading.Event``'s interface (``set``, ``is_set``,
    ``wait``), readable without a system call: the schedule asks per invocation.

    Shared memory only, no lock or condition: ``set`` writes a byte and ``wait`` polls.
    A ``multiprocessing.Event`` is a condition, and a process killed while it waits on
    one (SIGKILL, the OOM killer) leaves its sleeper counted: every later ``set`` then
    waits for that sleeper to wake, for ever (the parent's stop after a shard died)."""

    def __init__(self, ctx: Any) -> None:
        self._value = ctx.RawValue("b", 0)

    def set(self) -> None:
        self._value.value = 1

    def is_set(self) -> bool:
        return bool(self._value.value)

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._value.value:
            left = _FLAG_POLL_S if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, _FLAG_POLL_S))
        return True


class SharedSchedule(Schedule):
    """``Schedule`` with its state in shared memory: the same answers to every shard's
    callers (each attribute a ``RawValue``, changed only under the shared condition)."""

    def __init__(
        self,
        ctx: Any,
        n: int,
        concurrency: int,
        *,
        ramp_s: float | None,
        idle_s: float | None,
        stop: SharedFlag,
    ) -> None:
        self._shared = (
            ctx.RawValue("q", 0),  # next
            ctx.RawValue("q", 0),  # in flight
            ctx.RawValue("b", 0),  # idling
            ctx.RawArray("d", 3),  # the freeze: done, start, end
            ctx.RawValue("q", 0),  # callers that asked for their first request
        )
        super().__init__(
            n, concurrency, ramp_s=ramp_s, idle_s=idle_s, stop=stop, cond=ctx.Condition()
        )

    def _init_state(self) -> None:
        pass  # the shared values start at zero

    @property
    def _next(self) -> int:
        return int(self._shared[0].value)

    @_next.setter
    def _next(self, value: int) -> None:
        self._shared[0].value = value

    @property
    def _in_flight(self) -> int:
        return int(self._shared[1].value)

    @_in_flight.setter
    def _in_flight(self, value: int) -> None:
        self._shared[1].value = value

    @property
    def _first_takes(self) -> int:
        return int(self._shared[4].value)

    @_first_takes.setter
    def _first_takes(self, value: int) -> None:
        self._shared[4].value = value

    @property
    def _idling(self) -> bool:
        return bool(self._shared[2].value)

    @_idling.setter
    def _idling(self, value: bool) -> None:
        self._shared[2].value = int(value)

    @property
    def idle_window(self) -> tuple[float, float] | None:
        window = self._shared[3]
        return (window[1], window[2]) if window[0] else None

    @idle_window.setter
    def idle_window(self, value: tuple[float, float] | None) -> None:
        window = self._shared[3]
        if value is not None:
            window[1], window[2] = value
        window[0] = value is not None

    def done(self) -> None:
        """As ``Schedule.done``, waking waiters only while the freeze is to come:
        otherwise only a ramp's callers wait, who look again every 50 ms."""
        with self._cond:
            self._in_flight -= 1
            if self._idle_at >= 0 and self.idle_window is None:
                self._wake_all()

    def _wake_all(self) -> None:
        """A cross-process notify waits until every sleeper has woken, and a shard killed
        while it slept never does: not once the fleet is stopped (a shard died), when
        every waiter looks again within 100 ms and gives up."""
        if not self.stop.is_set():
            self._cond.notify_all()


class LiveCounter:
    """Environments alive at once over every shard, and the most there were."""

    def __init__(self, ctx: Any) -> None:
        self._lock = ctx.Lock()
        self._live = ctx.RawValue("q", 0)
        self._peak = ctx.RawValue("q", 0)

    def change(self, delta: int) -> None:
        with self._lock:
            self._live.value += delta
            self._peak.value = max(self._peak.value, self._live.value)

    @property
    def peak(self) -> int:
        return int(self._peak.value)


@dataclass(eq=False)
class RemoteSlot:
    """The parent's view of one slot of a shard: only the environment numbers."""

    numbers: dict[int, int] = field(default_factory=dict)


class _Forwarder:
    """In a shard: ``_Collector.add``'s signature, each record batched to the parent."""

    def __init__(self, send: Callable[[bytes], None], slot_key: Callable[[Any], int]) -> None:
        self._send = send
        self._slot_key = slot_key
        self._lock = threading.Lock()
        self._batch: list[tuple[int, int, InvocationRecord, float, int | None, bool]] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(
            target=self._flush_often, name="lambda_conn-shard-send", daemon=True
        )
        self._thread.start()

    def add(
        self,
        index: int,
        slot: Any,
        record: InvocationRecord,
        started: float,
        descriptors: int | None,
        interrupted: bool = False,
    ) -> None:
        with self._lock:
            batch = (index, self._slot_key(slot), record, started, descriptors, interrupted)
            self._batch.append(batch)
            full = len(self._batch) >= _BATCH_MAX
        if full or record.cold_start:  # a new environment counts at once (the memory probe)
            self.flush()

    def flush(self) -> None:
        with self._lock:
            batch, self._batch = self._batch, []
            if batch:
                self._send(pickle.dumps(("records", batch), pickle.HIGHEST_PROTOCOL))

    def _flush_often(self) -> None:
        while not self._closed.wait(_BATCH_S):
            self.flush()

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        self.flush()


@dataclass
class _Shared:
    """What the parent and every shard see."""

    schedule: SharedSchedule
    stop: SharedFlag
    begin: SharedFlag  # every shard is forked: the very first caller may start
    go: SharedFlag  # callers other than the very first may start (after the memory probe)
    work_done: Any  # a semaphore each shard releases when its callers are back
    teardown: SharedFlag
    abort: SharedFlag
    live: LiveCounter


def make_shared(
    ctx: Any, n: int, concurrency: int, ramp_s: float | None, idle_s: float | None
) -> _Shared:
    stop = SharedFlag(ctx)
    return _Shared(
        schedule=SharedSchedule(ctx, n, concurrency, ramp_s=ramp_s, idle_s=idle_s, stop=stop),
        stop=stop,
        begin=SharedFlag(ctx),
        go=SharedFlag(ctx),
        work_done=ctx.Semaphore(0),
        teardown=SharedFlag(ctx),
        abort=SharedFlag(ctx),
        live=LiveCounter(ctx),
    )


class Shard:
    """One forked supervisor process and the parent's end of its pipe."""

    def __init__(
        self,
        ctx: Any,
        number: int,
        callers: list[int],
        shared: _Shared,
        run: Callable[[int, list[int], _Shared, Any], None],
    ) -> None:
        self.number = number
        self.slots: dict[int, RemoteSlot] = {}
        self.shutdowns: list[tuple[int, ShutdownRecord]] = []
        self.error: BaseException | None = None
        #: What the shard said of itself at its end (``ShardStats``); None without a report.
        self.stats: ShardStats | None = None
        #: How the shard ended when it did without its report (killed, crashed).
        self.died: str | None = None
        self.ended = False
        self.hung = False  # SIGKILLed by ``join``: it did not end after the teardown
        parent_end, child_end = ctx.Pipe(duplex=False)
        self._conn = parent_end
        parent = os.getpid()
        self.process = ctx.Process(
            target=_shard_main,
            args=(parent, number, callers, shared, child_end, run),
            name=f"lambda_conn-fleet-shard-{number}",
            daemon=False,
        )
        with warnings.catch_warnings():
            # Python 3.12+ warns of fork() in a process with threads. A lock another
            # thread holds at the fork stays held for ever in the child, so the parent
            # forks every shard before it starts any thread that handles records (the
            # receivers, and the progress hook they call, which writes to stderr: a
            # shard flushes stderr as it exits) and before any runtime exists (the shards
            # wait for ``begin``). What runs meanwhile: the log tap's thread, blocked in
            # an unbuffered read of a pipe no runtime writes to yet (it holds no lock),
            # the sampler's, which takes only its own locks and connection, and threads
            # of the caller's own. CPython re-initialises the import lock and logging's
            # locks in the child.
            warnings.filterwarnings(
                "ignore", "This process .* is multi-threaded", DeprecationWarning
            )
            self.process.start()
        child_end.close()

    def slot(self, key: int) -> RemoteSlot:
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = RemoteSlot()
        return slot

    def receive(
        self, add: Callable[[int, RemoteSlot, InvocationRecord, float, int | None, bool], None]
    ) -> None:
        """Until the shard ends: each record to ``add``, then its shutdowns (a thread)."""
        try:
            while True:
                try:
                    kind, payload = pickle.loads(self._conn.recv_bytes())
                except (EOFError, OSError):
                    if not self.ended:  # its pipe closed: it is exiting, or gone
                        self.process.join(5.0)
                        how = (
                            "did not end after the teardown and was SIGKILLed"
                            if self.hung
                            else _how(self.process.exitcode)
                        )
                        self.died = f"fleet shard {self.number} (pid {self.process.pid}) {how}"
                    return
                if kind == "records":
                    for index, key, record, started, descriptors, interrupted in payload:
                        add(index, self.slot(key), record, started, descriptors, interrupted)
                elif kind == "end":
                    self.shutdowns, self.error, self.stats = payload
                    self.ended = True
                    return
        finally:
            self._conn.close()

    def join(self, timeout: float) -> None:
        self.process.join(timeout)
        if self.process.is_alive():
            self.hung = True
            self.process.kill()
            self.process.join()


def _how(exitcode: int | None) -> str:
    if exitcode is None:
        return "closed its pipe before its report"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode} before its report"


def _shard_main(
    parent: int,
    number: int,
    callers: list[int],
    shared: _Shared,
    conn: Any,
    run: Callable[[int, list[int], _Shared, Any], None],
) -> None:
    """The forked shard: dies with the parent, ignores Ctrl-C (the parent handles it and
    tells it through ``shared``), runs its callers, ends its reaper before it exits."""
    from lambda_conn.local._environment import _PR_SET_PDEATHSIG, _prctl

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() != parent:
        os._exit(1)
    try:
        run(number, callers, shared, conn)
    finally:
        with contextlib.suppress(Exception):
            conn.close()
        _reaper._stop()


class ShardStats(NamedTuple):
    """What a shard reports of itself at its end, for the fleet's summary."""

    #: Its own CPU time (user + system), its runtimes' not included.
    cpu_s: float
    #: Its peak resident memory (``ru_maxrss``).
    peak_rss_bytes: int


def own_stats() -> ShardStats:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return ShardStats(usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024)


def send_end(
    conn: Any,
    shutdowns: list[tuple[int, ShutdownRecord]],
    error: BaseException | None,
    stats: ShardStats,
) -> None:
    try:
        data = pickle.dumps(("end", (shutdowns, error, stats)), pickle.HIGHEST_PROTOCOL)
    except Exception:  # an exception that does not pickle: its text
        data = pickle.dumps(("end", (shutdowns, RuntimeError(repr(error)), stats)))
    conn.send_bytes(data)
