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
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lambda_conn.local import _reaper
from lambda_conn.local._lambda import LocalLambda
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
_POLL_S = 0.05


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
    ``wait``), readable without a system call: the schedule asks per invocation."""

    def __init__(self, ctx: Any) -> None:
        self._value = ctx.RawValue("b", 0)
        self._event = ctx.Event()

    def set(self) -> None:
        self._value.value = 1
        self._event.set()

    def is_set(self) -> bool:
        return bool(self._value.value)

    def wait(self, timeout: float | None = None) -> bool:
        return bool(self._event.wait(timeout))


class SharedSchedule:
    """``Schedule`` in shared memory: the same answers to every shard's callers."""

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
        self.n = n
        self.concurrency = concurrency
        self.ramp_s = ramp_s or 0.0
        self.idle_s = idle_s
        self.stop = stop
        self._cond = ctx.Condition(ctx.Lock())
        self._next = ctx.RawValue("q", 0)
        self._in_flight = ctx.RawValue("q", 0)
        self._idle_at = n // 2 if idle_s is not None else -1
        self._idling = ctx.RawValue("b", 0)
        self._window = ctx.RawArray("d", 3)  # done flag, start, end
        self.started_at = time.monotonic()

    @property
    def idle_window(self) -> tuple[float, float] | None:
        window = self._window
        return (window[1], window[2]) if window[0] else None

    @property
    def handed_out(self) -> int:
        return int(self._next.value)

    def join_time(self, caller: int) -> float:
        if self.concurrency <= 1 or not self.ramp_s:
            return 0.0
        return self.ramp_s * caller / (self.concurrency - 1)

    def wait_to_join(self, caller: int) -> bool:
        join_at = self.started_at + self.join_time(caller)
        while not self.stop.is_set() and self._next.value < self.n:
            delay = join_at - time.monotonic()
            if delay <= 0:
                return True
            time.sleep(min(delay, _POLL_S))
        return False

    def take(self) -> int | None:
        with self._cond:
            while True:
                if self.stop.is_set() or self._next.value >= self.n:
                    return None
                if self._next.value != self._idle_at or self._window[0]:
                    break
                if self._idling.value or self._in_flight.value:
                    self._cond.wait(0.1)
                    continue
                self._idle_locked()
            return self._hand_out()

    def take_now(self) -> int | None:
        with self._cond:
            if self.stop.is_set() or self._next.value >= self.n:
                return None
            if self._next.value == self._idle_at and not self._window[0]:
                return None
            return self._hand_out()

    def _hand_out(self) -> int:
        index = int(self._next.value)
        self._next.value = index + 1
        self._in_flight.value += 1
        return index

    def _idle_locked(self) -> None:
        assert self.idle_s is not None
        self._idling.value = 1
        start = time.monotonic()
        self._cond.release()
        try:
            self.stop.wait(self.idle_s)
        finally:
            self._cond.acquire()
        self._idling.value = 0
        self._window[1] = start - self.started_at
        self._window[2] = time.monotonic() - self.started_at
        self._window[0] = 1
        self._cond.notify_all()

    def done(self) -> None:
        with self._cond:
            self._in_flight.value -= 1
            if self._idle_at >= 0 and not self._window[0]:
                self._cond.notify_all()  # only a caller waiting for the freeze waits


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
        self._batch: list[tuple[int, int, InvocationRecord, float, int | None]] = []
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
    ) -> None:
        with self._lock:
            self._batch.append((index, self._slot_key(slot), record, started, descriptors))
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
        self.ended = False
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
            # Python 3.12+ warns of fork() in a process with threads (this one has its
            # log tap's and sampler's): the shard never touches what they hold, and
            # CPython re-initialises the import lock and logging's locks in the child.
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
        self, add: Callable[[int, RemoteSlot, InvocationRecord, float, int | None], None]
    ) -> None:
        """Until the shard ends: each record to ``add``, then its shutdowns (a thread)."""
        try:
            while True:
                try:
                    kind, payload = pickle.loads(self._conn.recv_bytes())
                except (EOFError, OSError):
                    if not self.ended:
                        self.error = self.error or RuntimeError(
                            f"fleet shard {self.number} exited before its report "
                            f"(exit status {self.process.exitcode})"
                        )
                    return
                if kind == "records":
                    for index, key, record, started, descriptors in payload:
                        add(index, self.slot(key), record, started, descriptors)
                elif kind == "end":
                    self.shutdowns, self.error = payload
                    self.ended = True
                    return
        finally:
            self._conn.close()

    def join(self, timeout: float) -> None:
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


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


def send_end(
    conn: Any, shutdowns: list[tuple[int, ShutdownRecord]], error: BaseException | None
) -> None:
    try:
        data = pickle.dumps(("end", (shutdowns, error)), pickle.HIGHEST_PROTOCOL)
    except Exception:  # an exception that does not pickle: its text
        data = pickle.dumps(("end", (shutdowns, RuntimeError(repr(error)))))
    conn.send_bytes(data)


def new_lambda(handler: str, options: dict[str, Any]) -> LocalLambda:
    return LocalLambda(handler, **options)
