"""A fleet soak: N concurrent callers, execution environments created as Lambda creates them.

The outage that fan-out causes is not in one environment: each of 50 environments opens
(and, with reuse, keeps) its own connections and the shared database runs out. This runs
the function in as many real awslambdaric environments as the concurrency needs, each its
own process group with Lambda's limits, frozen between its invocations and reset on its
own, and keeps what a single-environment soak keeps plus the fleet's numbers.

Threads: one long-lived ``EnvironmentThread`` per caller. An environment is forked by the
caller whose request needed it and may later serve other callers, so no caller thread
ends before every environment is gone: the runtime's death signal (PR_SET_PDEATHSIG,
sent when the forking *thread* exits) then fires only when the supervisor itself dies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lambda_conn.local._capacity import Capacity, CapacityError
from lambda_conn.local._environment import EnvironmentThread, Output
from lambda_conn.local._fleet_pool import EnvironmentPool, Schedule, Slot, check_fleet_options
from lambda_conn.local._fleet_report import FleetSummary, fleet_failure_kind, too_many_connections
from lambda_conn.local._fleet_shards import (
    LiveCounter,
    Shard,
    ShardStats,
    SharedFlag,
    SharedSchedule,
    make_shared,
    own_stats,
    send_end,
    shards_for,
)
from lambda_conn.local._lambda import LocalLambda
from lambda_conn.local._logtap import LogTap
from lambda_conn.local._record_columns import RecordColumns
from lambda_conn.local._records import InvocationRecord, ShutdownRecord
from lambda_conn.local._report import SoakSummary, summarize
from lambda_conn.local._soak import SoakResult, check_soak_options

TYPE_CHECKING = False
if TYPE_CHECKING:
    from lambda_conn.local._server_sampler import ServerSampler, ServerSeries

__all__ = ["FleetInterrupted", "FleetReport", "fleet_soak"]

Progress = Callable[[int, InvocationRecord], None]
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_ABORT_POLL_S = 0.05
#: How long the shards have to tear down and report before they are SIGKILLed: their
#: runtimes die with them (PR_SET_PDEATHSIG) and their children with their reapers.
_SHARD_TEARDOWN_S = 30.0
#: The same once a shard died: another may be stuck on a lock the dead one held.
_SHARD_GONE_GRACE_S = 5.0


def _own_rss() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return None


@dataclass(frozen=True)
class FleetReport(SoakResult):
    """Records (in invocation order), shutdowns, the soak's summary and the fleet's."""

    handler: str
    memory_mb: int
    timeout_s: float
    wall_s: float
    #: In invocation order; a read-only sequence kept compact (``RecordColumns``).
    records: Sequence[InvocationRecord]
    shutdowns: list[ShutdownRecord]
    #: When each record's invocation was sent, in seconds after the soak started
    #: (``started_at``, ``time.monotonic()``), parallel to ``records``.
    started_s: array[float]
    started_at: float
    fleet: FleetSummary
    stopped_early: str | None = None
    pinning: dict[str, int] = field(default_factory=dict)
    #: (start, end) seconds of the --idle freeze, when there was one.
    idle_window: tuple[float, float] | None = None
    #: With a DSN: what the server saw (its clock's start is ``server.started_at``).
    server: ServerSeries | None = None
    summary: SoakSummary = field(init=False)

    def __post_init__(self) -> None:
        summary = summarize(self.records, self.pinning, kind_of=fleet_failure_kind)
        object.__setattr__(self, "summary", summary)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self._head(),
            "fleet": self.fleet.to_dict(),
            "idle_window_s": None if self.idle_window is None else list(self.idle_window),
            "server": self._server_dict(),
            "records": [
                {**r.to_dict(), "started_s": round(t, 6)}
                for r, t in zip(self.records, self.started_s, strict=True)
            ],
            "shutdowns": [s.to_dict() for s in self.shutdowns],
        }

    def _server_dict(self) -> dict[str, Any] | None:
        """The samples with their times on the soak's clock (seconds after it started, as
        ``started_s`` and ``idle_window_s``): the sampler started a little earlier."""
        if self.server is None:
            return None
        offset = self.server.started_at - self.started_at
        server = self.server.to_dict()
        server["t"] = [round(t + offset, 4) for t in self.server.times]
        return server


class FleetInterrupted(KeyboardInterrupt):
    """Ctrl-C during a fleet soak, with what it recorded (``.report``), every environment
    and its children killed."""

    def __init__(self, report: FleetReport) -> None:
        super().__init__(f"fleet soak interrupted after {len(report.records)} invocations")
        self.report = report


class _Collector:
    """Takes each finished invocation's record, compactly: in columns (``RecordColumns``,
    about 70 bytes an invocation), not an object each.

    A successful response is not even decoded unless kept on purpose; the error type,
    message and stack of a failure are shared with every identical one (a fan-out outage
    fails the same way thousands of times).
    """

    def __init__(
        self,
        *,
        keep_responses: bool,
        progress: Progress | None,
        max_init_failures: int | None,
        stop: threading.Event | SharedFlag,
        capacity: Capacity,
    ) -> None:
        self._lock = threading.Lock()
        self._keep = keep_responses
        self._progress = progress
        self._max_init_failures = max_init_failures
        self._stop = stop
        self.records = RecordColumns()
        self.started: array[float] = array("d")
        self.environments = 0
        self.replaced = 0
        #: Invocations cut short by the fleet's abort (Ctrl-C, or a shard that died).
        self.interrupted = 0
        self.stopped: str | None = None
        self._capacity = capacity
        #: The concurrency refused once an environment measured more than fits.
        self.refused: CapacityError | None = None
        self._init_failures = 0
        #: Set once the first record has been taken whole (its capacity check included).
        self.first_added = threading.Event()
        self._strings: dict[str, str] = {}
        self._stacks: dict[tuple[str, ...], list[str]] = {}

    def _share(self, text: str | None) -> str | None:
        return None if text is None else self._strings.setdefault(text, text)

    def _share_value(self, value: Any) -> Any:
        """The one kept copy of an equal string or list of strings (a stack trace)."""
        if isinstance(value, str):
            return self._strings.setdefault(value, value)
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return self._stacks.setdefault(tuple(value), value)
        return value

    def add(
        self,
        index: int,
        slot: Slot,
        record: InvocationRecord,
        started: float,
        descriptors: int | None,
        interrupted: bool = False,
    ) -> None:
        """``descriptors``: what a new environment holds of the supervisor's (None for
        a warm one). ``interrupted``: cut short by the fleet's abort, so not recorded;
        its environment still counts (and gets its number, for its shutdown)."""
        with self._lock:
            if record.cold_start:
                self.environments += 1
                self.replaced += bool(slot.numbers)
                slot.numbers[record.environment] = self.environments
            if interrupted:
                self.interrupted += 1
                return
            response = record.response  # a success's only when kept (``_invoke``)
            if not record.ok and isinstance(response, dict):
                response = {key: self._share_value(value) for key, value in response.items()}
            stack = record.stack_trace
            self.records.append(
                record,
                index=index,
                environment=slot.numbers.get(record.environment, 0),
                response=response,
                error_type=self._share(record.error_type),
                error_message=self._share(record.error_message),
                stack_trace=None if stack is None else self._share_value(stack),
            )
            self.started.append(started)
            refused = self._capacity.observe(record.rss_bytes, descriptors)
            if refused is not None and self.refused is None:
                self.refused = refused
                self._stop.set()
            self.first_added.set()  # the memory probe judged: stop already set if refused
            if self._progress is not None:
                self._progress(len(self.records), self.records[-1])
            failed_init = record.reset_reason == "init_error"
            self._init_failures = self._init_failures + 1 if failed_init else 0
            limit = self._max_init_failures
            if limit is not None and self._init_failures >= limit and self.stopped is None:
                self.stopped = (
                    f"Init failed {self._init_failures} times in a row: {record.error_type}: "
                    f"{record.error_message}"
                )
                self._stop.set()

    def in_order(self) -> tuple[RecordColumns, array[float]]:
        """Records and start times by invocation index (they finish out of order)."""
        order = self.records.by_index()
        started = array("d", (self.started[i] for i in order))
        return self.records.reordered(order), started


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Ctrl-C ignored while the fleet tears down: a second one must not leave environments
    frozen behind (on the main thread only, where Python handles signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """Ctrl-C during the block raises KeyboardInterrupt at its end, so that what the
    block does (fork a shard and register it) is done whole; a child forked meanwhile
    inherits the handler, which only notes the signal (on the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        if callable(previous):
            previous(signal.SIGINT, None)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt


class _Fleet:
    """One process's callers and environments; the schedule, the stop and the collector
    are this process's own, or (in a shard) shared with the parent."""

    def __init__(
        self,
        make: Callable[[], LocalLambda],
        *,
        concurrency: int,
        payload: bytes,
        keep_responses: bool,
        schedule: Schedule | SharedSchedule,
        stop: threading.Event | Any,
        collector: _Collector | Any,
        live: LiveCounter | None = None,
    ) -> None:
        self.stop = stop
        self.pool = EnvironmentPool(make, concurrency, live)
        self.schedule = schedule
        self.collector = collector
        self.payload = payload  # once: every invocation sends the same event
        self._keep = keep_responses
        self.concurrency = concurrency
        self._cond = threading.Condition()
        self._callers: list[EnvironmentThread] = []
        self._finished = 0
        self._release = threading.Event()
        self.probed = threading.Event()
        self.error: BaseException | None = None
        #: Set by an aborting teardown (Ctrl-C, a shard that died) before it kills: what
        #: it cuts short is not the function's failure, and is not recorded as one.
        self._aborting = False

    # ------------------------------------------------------------------- callers
    def start_caller(self, k: int) -> None:
        thread = EnvironmentThread(
            target=self._call, args=(k,), name=f"lambda_conn-fleet-caller-{k}", daemon=True
        )
        self._callers.append(thread)
        thread.start()

    def _call(self, k: int) -> None:
        try:
            if self.schedule.wait_to_join(k):
                slot: Slot | None = None
                index = self.schedule.take(first=True)
                while index is not None:
                    slot, index = self._invoke(index, slot)
                    self.probed.set()
                    if index is None:
                        index = self.schedule.take()
        except BaseException as exc:  # reported by the main thread after teardown
            self.error = self.error or exc
            self.stop.set()
        finally:
            self.probed.set()
            with self._cond:
                self._finished += 1
                self._cond.notify_all()
            # Runtimes this thread forked die with it: it ends only after all are gone.
            self._release.wait()

    def _invoke(self, index: int, slot: Slot | None) -> tuple[Slot | None, int | None]:
        """Invoke ``index`` in ``slot`` (kept from this caller's previous invocation) or
        in the slot the pool routes it to.

        When the next invocation can be taken at once, it is handed to the same
        environment as the runtime asks for it (``more``), as a warm environment serves
        back-to-back requests, and the slot stays this caller's: (slot, next index). With
        as many slots as callers no other caller can be waiting for it, so this is the
        pool's own choice (its most recently used warm slot) without the freeze and thaw
        in between. Otherwise the slot goes back to the pool: (None, None)."""
        if slot is None:
            slot = self.pool.acquire()
        started = time.monotonic() - self.schedule.started_at
        ahead = slot.fn.dispatched_ahead_at()
        if ahead is not None:  # sent while the caller's previous invocation was recorded
            started -= time.perf_counter() - ahead
        record: InvocationRecord | None = None
        descriptors: int | None = None
        following = self.schedule.take_now()
        more = following is not None
        try:
            record = slot.fn._invoke(self.payload, keep_response=self._keep, more=more)
            if record.cold_start:  # measured before another caller can take the slot
                descriptors = slot.fn.supervisor_descriptors()
        except BaseException:
            if following is not None:
                self.schedule.done()  # taken, never to be invoked
            raise
        finally:
            slot.fn.records.clear()  # the collector keeps the one compact copy
            reset = record is None or record.reset_reason is not None
            kept = more and not reset
            if not kept:
                self.pool.release(slot, reset=reset)
            self.schedule.done()
        # Killed by the abort: counted, not recorded (a crash of the function's own that
        # ends in the same moment is counted with them).
        interrupted = self._aborting and record.outcome == "crash"
        self.collector.add(index, slot, record, started, descriptors, interrupted)
        if kept:
            return slot, following
        if following is not None and self.stop.is_set():
            self.schedule.done()  # taken but never handed over: not in flight, not invoked
            following = None
        return None, following

    # -------------------------------------------------------------- main thread
    def wait_probe(self) -> None:
        while not self.probed.wait(0.1):
            pass

    def wait_callers(self) -> None:
        while not self.callers_back(0.1):
            pass

    def callers_back(self, timeout: float) -> bool:
        """True once every caller started has no more work (waits up to ``timeout``)."""
        with self._cond:
            if self._finished < len(self._callers):
                self._cond.wait(timeout)
            return self._finished >= len(self._callers)

    def teardown(self, *, abort: bool) -> None:
        """Stop handing out work; on abort SIGKILL every environment until every caller
        is back; then shut every environment down and let the callers end."""
        with _sigint_deferred():
            self.stop.set()
            self._aborting = self._aborting or abort
            while True:
                if abort:
                    self.pool.abort_all()
                with self._cond:
                    if self._finished >= len(self._callers):
                        break
                    self._cond.wait(_ABORT_POLL_S)
            closers = [
                threading.Thread(target=slot.fn.close, name="lambda_conn-fleet-close")
                for slot in self.pool.slots
            ]
            for closer in closers:
                closer.start()
            for closer in closers:
                closer.join()
            self._release.set()
            for caller in self._callers:
                caller.join()

    def shutdowns(self) -> list[ShutdownRecord]:
        return [
            dataclasses.replace(s, environment=slot.numbers.get(s.environment, 0))
            for slot in self.pool.slots
            for s in slot.fn.shutdowns
        ]


def fleet_soak(
    handler: str,
    n: int,
    *,
    concurrency: int,
    ramp_s: float | None = None,
    idle_s: float | None = None,
    event: Any = None,
    handler_dir: str | os.PathLike[str] | None = None,
    memory_mb: int = 128,
    timeout_s: float = 3.0,
    env: Mapping[str, str] | None = None,
    output: Output = None,
    progress: Progress | None = None,
    keep_responses: bool = False,
    max_init_failures: int | None = 10,
    dsn: str | None = None,
    shards: int | None = None,
) -> FleetReport:
    """Invoke ``handler`` ``n`` times from ``concurrency`` concurrent callers.

    Each caller sends one request at a time; a request goes to a warm idle environment,
    or to a new one when every warm one is busy (so at most ``concurrency`` exist).
    When ``concurrency`` environments at ``memory_mb`` each would not fit in the memory
    available, the first invocation runs alone: its environment's resident memory tells
    how many fit, and a larger ``concurrency`` raises ``CapacityError`` (a ValueError)
    before any other environment starts; so does, after the soak is torn down, any
    environment's resident memory growing past what fits. The supervisor's soft
    RLIMIT_NOFILE is raised up to the hard limit when the environments' descriptors need
    it (and put back at the end); a ``concurrency`` they cannot fit in raises
    ``CapacityError`` before the first invocation. ``ramp_s``: callers join one by
    one, concurrency rising linearly from 1 to ``concurrency`` over that many seconds.
    ``idle_s``: after half the invocations, every environment is frozen that long.
    ``dsn`` (``mysql://`` or ``postgresql://``): the server's own count of client
    connections is sampled every 100 ms meanwhile and once when the callers finish
    (``report.server``); an unreachable
    server raises ``SamplerError`` before the first invocation.
    Ctrl-C raises ``FleetInterrupted`` with the records so far, every environment gone.
    ``shards``: supervisor processes serving the environments (None: one per core, at
    most ``concurrency``; 1: all from this process), so the rate grows with the cores.
    Other options are ``soak()``'s.
    """
    check_soak_options(n, max_init_failures)
    concurrency, ramp, idle = check_fleet_options(concurrency, ramp_s, idle_s, n)
    processes = shards_for(concurrency, shards)
    sampler = None
    if dsn is not None:
        from lambda_conn.local._server_sampler import ServerSampler

        sampler = ServerSampler(dsn).start()  # SamplerError: nothing has started yet
    try:
        report = _run(
            handler,
            n,
            concurrency=concurrency,
            shards=processes,
            ramp=ramp,
            idle=idle,
            event=event,
            options={
                "handler_dir": handler_dir,
                "memory_mb": memory_mb,
                "timeout_s": timeout_s,
                "env": env,
            },
            output=output,
            collector_options={
                "keep_responses": keep_responses,
                "progress": progress,
                "max_init_failures": max_init_failures,
            },
            sampler=sampler,
        )
    finally:
        if sampler is not None:
            sampler.stop()  # a second stop() returns the same series
    if report.stopped_early == "interrupted":
        raise FleetInterrupted(report)
    return report


def _run(
    handler: str,
    n: int,
    *,
    concurrency: int,
    shards: int,
    ramp: float | None,
    idle: float | None,
    event: Any,
    options: dict[str, Any],
    output: Output,
    collector_options: dict[str, Any],
    sampler: ServerSampler | None,
) -> FleetReport:
    rss_start = _own_rss()
    with LogTap(output) as tap:
        options = {**options, "output": tap.fd}
        first = LocalLambda(handler, **options)  # validates every setting here, at once
        capacity = Capacity(
            concurrency,
            handler=first.config.spec.lambda_form,
            memory_bytes=first.config.memory_bytes,
        )
        payload = json.dumps(event).encode()
        keep = bool(collector_options["keep_responses"])
        work: _Here | _Shards
        if shards > 1:
            first.close()  # the shards make their own
            work = _Shards(
                handler, n, concurrency, shards, ramp, idle, options, payload, keep,
                collector_options, capacity,
            )  # fmt: skip
        else:
            work = _Here(
                handler, n, concurrency, ramp, idle, options, first, payload, keep,
                collector_options, capacity,
            )  # fmt: skip
        ended = _run_work(work, capacity, sampler)
    # The last sample after every environment is gone: what the server still holds.
    series = sampler.stop() if sampler is not None else None
    if ended.error is not None:
        raise ended.error
    collector = ended.collector
    if collector.refused is not None:
        raise collector.refused
    records, started = collector.in_order()
    window = ended.schedule.idle_window
    shard_stats = [st for st in ended.shard_stats if st is not None]
    summary = FleetSummary(
        concurrency=concurrency,
        ramp_s=ramp,
        idle_s=idle,
        environments_created=collector.environments,
        environments_replaced=collector.replaced,
        peak_environments=ended.peak_live,
        too_many_connections=sum(too_many_connections(r) for r in records),
        rds_retries=sum(tap.classes["rds_connect_retry"].values()),
        rds_retries_by_code=dict(tap.classes["rds_connect_retry"].most_common()),
        idle_after=None if ended.schedule.idle_window is None else n // 2,
        supervisor_rss_start_bytes=rss_start,
        supervisor_rss_end_bytes=_own_rss(),
        peak_server_connections=None if series is None else series.peak,
        server_max_connections=None if series is None else series.max_connections,
        idle_frozen_s=None if window is None else window[1] - window[0],
        interrupted_in_flight=collector.interrupted,
        shards=len(ended.shard_stats) or 1,
        shard_cpu_s=None if not shard_stats else sum(st.cpu_s for st in shard_stats),
        shard_peak_rss_bytes=None
        if not shard_stats
        else max(st.peak_rss_bytes for st in shard_stats),
    )
    return FleetReport(
        handler=first.config.spec.lambda_form,
        memory_mb=first.config.memory_mb,
        timeout_s=first.config.timeout_s,
        wall_s=ended.wall,
        records=records,
        shutdowns=ended.shutdowns,
        started_s=started,
        started_at=ended.schedule.started_at,
        fleet=summary,
        stopped_early="interrupted" if ended.interrupted else ended.stopped or collector.stopped,
        pinning=dict(tap.classes["rds_proxy_pinning"]),
        idle_window=ended.schedule.idle_window,
        server=series,
    )


@dataclass
class _Ended:
    """What a fleet run left for its report, in this process or over its shards."""

    collector: _Collector
    schedule: Schedule | SharedSchedule
    shutdowns: list[ShutdownRecord]
    peak_live: int
    wall: float
    interrupted: bool
    error: BaseException | None
    #: Why the fleet stopped before its work was done, when not for the collector.
    stopped: str | None = None
    #: The shards' own report (None in one process, or for a shard that sent none).
    shard_stats: list[ShardStats | None] = dataclasses.field(default_factory=list)


def _run_work(work: _Here | _Shards, capacity: Capacity, sampler: ServerSampler | None) -> _Ended:
    """The fleet's run, wherever its callers are: the descriptor check, the work, the
    sample at its end, then (also on Ctrl-C or an error) every environment down."""
    interrupted = False
    normal_end = False
    start = time.perf_counter()
    try:
        capacity.check_descriptors()  # CapacityError before any environment starts
        normal_end = work.run()
        if normal_end and sampler is not None:  # before teardown closes anything
            sampler.sample_now()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        wall = time.perf_counter() - start
        with _sigint_deferred():
            work.teardown(abort=not normal_end)
            capacity.restore()
    return work.ended(wall, interrupted)


class _Here:
    """Every environment served from this process's caller threads."""

    def __init__(
        self,
        handler: str,
        n: int,
        concurrency: int,
        ramp: float | None,
        idle: float | None,
        options: dict[str, Any],
        first: LocalLambda,
        payload: bytes,
        keep: bool,
        collector_options: dict[str, Any],
        capacity: Capacity,
    ) -> None:
        spare = [first]

        def make() -> LocalLambda:
            return spare.pop() if spare else LocalLambda(handler, **options)

        stop = threading.Event()
        self.schedule = Schedule(n, concurrency, ramp_s=ramp, idle_s=idle, stop=stop)
        self.collector = _Collector(stop=stop, capacity=capacity, **collector_options)
        self.fleet = _Fleet(
            make,
            concurrency=concurrency,
            payload=payload,
            keep_responses=keep,
            schedule=self.schedule,
            stop=stop,
            collector=self.collector,
        )
        self._first = first
        self._concurrency = concurrency
        self._measures_memory = capacity.measures_memory

    def run(self) -> bool:
        """The work, to its end (True)."""
        fleet = self.fleet
        fleet.start_caller(0)
        if self._measures_memory:  # the first invocation alone, then the rest
            fleet.wait_probe()
        if not fleet.stop.is_set():
            for k in range(1, self._concurrency):
                fleet.start_caller(k)
        fleet.wait_callers()
        return True

    def teardown(self, *, abort: bool) -> None:
        self.fleet.teardown(abort=abort)
        self._first.close()  # when no request ever reached it (safe twice)

    def ended(self, wall: float, interrupted: bool) -> _Ended:
        fleet = self.fleet
        return _Ended(
            self.collector,
            self.schedule,
            fleet.shutdowns(),
            fleet.pool.peak_live,
            wall,
            interrupted,
            fleet.error,
        )


class _Shards:
    """The environments served by ``shards`` forked supervisor processes
    (``_fleet_shards``); this process collects, samples and handles Ctrl-C."""

    def __init__(
        self,
        handler: str,
        n: int,
        concurrency: int,
        shards: int,
        ramp: float | None,
        idle: float | None,
        options: dict[str, Any],
        payload: bytes,
        keep: bool,
        collector_options: dict[str, Any],
        capacity: Capacity,
    ) -> None:
        import multiprocessing

        self._ctx = multiprocessing.get_context("fork")  # before any environment
        self.shared = make_shared(self._ctx, n, concurrency, ramp, idle)
        self.collector = _Collector(stop=self.shared.stop, capacity=capacity, **collector_options)
        self._concurrency = concurrency
        self._shards = shards
        self._measures_memory = capacity.measures_memory

        def run(number: int, callers: list[int], shared_: Any, conn: Any) -> None:
            _shard(handler, options, payload, keep, callers, shared_, conn)

        self._run = run
        self.started: list[Shard] = []
        self.receivers: list[threading.Thread] = []

    def run(self) -> bool:
        """The work, to its end (True), or until a shard died (False: stop the others)."""
        shared, collector = self.shared, self.collector
        # Every shard forked first, while no receiver exists and no runtime (they wait
        # for ``begin``): see ``Shard`` on the threads that do at each fork.
        for number in range(self._shards):
            callers = [k for k in range(self._concurrency) if k % self._shards == number]
            with _sigint_held():  # forked and registered, or neither
                self.started.append(Shard(self._ctx, number, callers, shared, self._run))
        self._receive()
        if not self._measures_memory:
            shared.go.set()
        shared.begin.set()
        if self._measures_memory:  # the first invocation alone, then the rest
            while not collector.first_added.wait(0.005) and not shared.stop.is_set():
                if any(not r.is_alive() for r in self.receivers[:1]):
                    break
            shared.go.set()
        back = 0
        while back < len(self.started):
            if shared.work_done.acquire(timeout=0.1):
                back += 1
            elif any(not r.is_alive() for r in self.receivers):
                return False  # its pipe closed before the teardown: that shard died
        return True

    def _receive(self) -> None:
        """A thread taking each started shard's records (once per shard)."""
        for shard in self.started[len(self.receivers) :]:
            receiver = threading.Thread(
                target=shard.receive, args=(self.collector.add,), name="lambda_conn-fleet-receive"
            )
            self.receivers.append(receiver)
            receiver.start()

    def teardown(self, *, abort: bool) -> None:
        shared = self.shared
        if abort:
            shared.stop.set()
            shared.abort.set()
        shared.teardown.set()
        self._receive()  # a Ctrl-C between two forks: the shards forked so far too
        died = any(shard.died for shard in self.started)
        deadline = time.monotonic() + (_SHARD_GONE_GRACE_S if died else _SHARD_TEARDOWN_S)
        for receiver in self.receivers:
            receiver.join(max(0.0, deadline - time.monotonic()))
        for shard in self.started:  # SIGKILLed if still there: stuck, or never reporting
            shard.join(timeout=max(0.0, deadline - time.monotonic()))
        for receiver in self.receivers:
            receiver.join()  # the shard is gone: its pipe is closed

    def ended(self, wall: float, interrupted: bool) -> _Ended:
        started = self.started
        error = next((shard.error for shard in started if shard.error is not None), None)
        shutdowns = [
            dataclasses.replace(s, environment=shard.slot(key).numbers.get(s.environment, 0))
            for shard in started
            for key, s in shard.shutdowns
        ]
        # the shard that died first, then any that did not end after it (SIGKILLed here)
        died = [shard.died for shard in sorted(started, key=lambda s: s.hung) if shard.died]
        stopped = None
        if died:
            stopped = (
                f"{'; '.join(died)}: the fleet was stopped; what a shard had not yet sent is "
                "not recorded (its invocations in flight, its environments' shutdowns)"
            )
        shared = self.shared
        stats = [shard.stats for shard in started]
        return _Ended(
            self.collector,
            shared.schedule,
            shutdowns,
            shared.live.peak,
            wall,
            interrupted,
            error,
            stopped,
            shard_stats=stats,
        )


def _shard(
    handler: str,
    options: dict[str, Any],
    payload: bytes,
    keep: bool,
    callers: list[int],
    shared: Any,
    conn: Any,
) -> None:
    """A shard's life: its callers until the work is done (or the parent aborts), then,
    when the parent says so, every environment down and the shutdowns sent."""
    from lambda_conn.local._fleet_shards import _Forwarder

    forwarder = _Forwarder(conn.send_bytes, lambda slot: slot.key)
    fleet = _Fleet(
        lambda: LocalLambda(handler, **options),
        concurrency=len(callers),
        payload=payload,
        keep_responses=keep,
        schedule=shared.schedule,
        stop=shared.stop,
        collector=forwarder,
        live=shared.live,
    )
    try:
        if _until(shared.begin, shared):  # every shard forked
            for k in callers:
                # the very first invocation may be the memory probe: alone
                if k != 0 and not _until(shared.go, shared):
                    break
                fleet.start_caller(k)
            while not fleet.callers_back(_ABORT_POLL_S) and not shared.abort.is_set():
                pass
    finally:
        forwarder.flush()
        shared.work_done.release()
        while not shared.teardown.wait(_ABORT_POLL_S):
            pass
        fleet.teardown(abort=shared.abort.is_set())
        forwarder.close()
        shutdowns = [(slot.key, s) for slot in fleet.pool.slots for s in slot.fn.shutdowns]
        send_end(conn, shutdowns, fleet.error, own_stats())


def _until(flag: SharedFlag, shared: Any) -> bool:
    """Wait until ``flag`` is set (True), or the parent stops or aborts (False)."""
    while not flag.wait(_ABORT_POLL_S):
        if shared.abort.is_set() or shared.stop.is_set():
            return False
    return True
