"""The check after each invocation: measure, compare, and report or arm a recycle.

It runs after the invocation's own cleanup, so what it counts is what the invocation left
behind. The baseline is taken at the end of the first invocation: the first point after
Init where we have control (Init is not over when the decorator runs, and a
``reused_connection`` opens on first use, which is not a leak). Each environment draws its
jitter then too, after any SnapStart restore, so restored copies do not share one draw.

Besides the levels (the configured limit, the hard ceiling) the guard watches the growth
per invocation (``growth``): when the next invocation or two at the measured rate would
reach the hard maximum itself (RLIMIT_NOFILE, the function's memory), it recycles now,
whatever the minimum lifetime or the trigger ("projected"). The minimum lifetime defers a
recycle at the limit only while the environment can live that long under the ceiling:
if the growth will carry it to the ceiling first, the recycle happens at the limit.
"""

from __future__ import annotations

import math
import os
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

from lambda_conn._guard import probes
from lambda_conn._guard.growth import Growth
from lambda_conn._guard.triggers import REQUEST, Trigger, classify

if TYPE_CHECKING:
    from collections.abc import Callable

    from lambda_conn._guard.config import HealthConfig, Platform

REPORT_INTERVAL_S = 60.0  # at most one "over the limit, not recycling" line a minute

# Depth of active @health_guard wrappers: a guard called from inside one (by an inner
# @managed_connection) leaves the check to the outer wrapper, which runs after that
# inner scope has closed its connections.
outer_health_guard: ContextVar[int] = ContextVar("lambda_conn_health_depth", default=0)


class Recycler(Protocol):
    def available(self) -> bool: ...
    def arm(self) -> bool: ...
    def is_armed(self) -> bool: ...
    def disarm(self) -> None: ...


class Emit(Protocol):
    def __call__(
        self, action: str, fields: dict[str, Any], function_name: str | None, emf: bool
    ) -> None: ...


def _random_unit() -> float:
    return int.from_bytes(os.urandom(4), "big") / 2**32


class Breach:
    """One limit crossed: what, how much, against which limit (``extra``: for the log)."""

    __slots__ = ("at_ceiling", "extra", "limit", "measured", "reason")

    def __init__(
        self,
        reason: str,
        measured: int,
        limit: int,
        at_ceiling: bool,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.reason = reason
        self.measured = measured
        self.limit = limit
        self.at_ceiling = at_ceiling
        self.extra = extra if extra is not None else {}

    def __repr__(self) -> str:
        return f"Breach({self.reason!r}, {self.measured} > {self.limit})"


def _effective(limit: int, baseline: int, cut: float) -> int:
    """Move ``limit`` towards ``baseline`` by the share ``cut`` (jitter), never below it."""
    return baseline + max(1, math.floor((limit - baseline) * (1 - cut)))


class HealthGuard:
    """Checks after every invocation; never raises into the handler."""

    def __init__(
        self,
        config: HealthConfig,
        platform: Platform,
        *,
        count_fds: Callable[[], int] | None = None,
        fd_upper_bound: Callable[[], int | None] | None = None,
        read_rss: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = _random_unit,
        collect: Callable[[], Any] | None = None,
        recycler: Recycler | None = None,
        emit: Emit | None = None,
    ) -> None:
        self.config = config
        self.platform = platform
        if count_fds is None:  # the real counter, with its cheap bound
            count_fds, fd_upper_bound = probes.count_fds, probes.count_fds.upper_bound
        self._count_fds = count_fds
        self._fd_upper_bound = fd_upper_bound
        self._fd_threshold: int | None = None  # the count above which fds are a breach
        self._read_rss = read_rss if read_rss is not None else probes.RssReader()
        self._clock = clock
        self._rand = rand
        if collect is None:
            import gc

            collect = gc.collect
        self._collect = collect
        if recycler is None:
            from lambda_conn._guard import recycle

            recycler = recycle
        self._recycler = recycler
        if emit is None:
            from lambda_conn._guard import report

            emit = report.emit
        self._emit = emit
        self.shared_with_managed = False
        self.born = clock()
        self.invocations = 0
        self.started = False
        self.baseline: dict[str, int] = {}
        self.limits: dict[str, int | None] = {}
        self._last_report: float | None = None
        self._failed = False
        self._hook_broken = False
        self._armed_for: str | None = None  # the request whose post is to end the process
        self.growth: dict[str, Growth] = {}  # per measured resource, from the baseline on
        self._measured: dict[str, int] = {}  # the last measurement of this invocation
        self._unreachable_said: set[str] = set()
        # What fails the next request when reached: RLIMIT_NOFILE, the function's memory.
        self.maxima: dict[str, int | None] = {
            "fd": platform.fd_rlimit if config.fd_limit else None,
            "memory": platform.memory_bytes if config.memory_limit else None,
        }
        hard = config.hard_ceiling
        self.ceilings: dict[str, int | None] = {
            name: math.floor(most * hard) if most is not None else None
            for name, most in self.maxima.items()
        }

    def __repr__(self) -> str:
        return (
            f"<HealthGuard invocations={self.invocations} limits={self.limits} "
            f"baseline={self.baseline}>"
        )

    @property
    def age(self) -> float:
        return self._clock() - self.born

    def restored(self) -> None:
        """After a SnapStart restore: this is a new environment with a new life."""
        self.born = self._clock()
        self.invocations = 0
        self.started = False
        self._last_report = None

    def after_invocation(self, args: tuple[Any, ...]) -> None:
        """Hook for ``@managed_connection``: skipped inside ``@health_guard``, which checks
        after it."""
        if outer_health_guard.get():
            return
        self.check(args)

    def check(self, args: tuple[Any, ...]) -> str | None:
        """Measure and act. Returns "recycle", "report" or None (for tests). Never raises."""
        try:
            return self._check(args)
        except Exception as exc:
            if not self._failed:  # once: a broken probe must not flood the log
                self._failed = True
                from lambda_conn._log import WARNING, log_event

                log_event(
                    WARNING, "health_check_failed", error=type(exc).__name__, message=str(exc)[:300]
                )
            return None

    # -- the steps -----------------------------------------------------------------------

    def _check(self, args: tuple[Any, ...]) -> str | None:
        self.invocations += 1
        if self._recycler.is_armed():
            request_id = _request_id(args)
            if self._armed_for is None or request_id in (None, self._armed_for):
                return None  # armed during this very invocation: its post comes next
            self._hook_missed()
        if not self.started:
            return self._judge(self._start(), args)  # the baseline: no growth yet
        measured = self._measure()
        try:
            return self._judge(measured, args)
        finally:
            self._grown()

    def _judge(self, measured: dict[str, int], args: tuple[Any, ...]) -> str | None:
        breach = self._breach(measured)
        if breach is None:
            return None
        if breach.at_ceiling or breach.reason == "projected":  # so is a value at the maximum
            self._unreachable(measured, args)
        event, _ = event_and_context(args)
        trigger = classify(event) if args else Trigger(REQUEST)
        action, deferred_by = self._decide(breach, trigger)
        if action == "report" and not self._report_due():
            return None
        if breach.reason != "max_invocations":
            self._collect()  # what the garbage collector frees is no reason to recycle
            measured = self._measure()
            breach = self._breach(measured)
            if breach is None:
                return None
            action, deferred_by = self._decide(breach, trigger)
        if action == "recycle":
            if self._recycler.arm():
                self._armed_for = _request_id(args)
            else:
                action, deferred_by = "report", "no_runtime_hook"
        self._act(action, deferred_by, breach, measured, trigger, args)
        return action

    def _hook_missed(self) -> None:
        """Armed after the last invocation, yet the process lives: the post never reached
        our hook (an awslambdaric that posts some other way). Say so once, then report."""
        self._armed_for = None
        disarm = getattr(self._recycler, "disarm", None)
        if callable(disarm):
            disarm()
        if self._hook_broken:
            return
        self._hook_broken = True
        from lambda_conn._log import WARNING, log_event

        log_event(
            WARNING,
            "recycle_hook_missed",
            note="a recycle was armed but the runtime's post of the response did not reach "
            "LambdaRuntimeClient.post_invocation_result/_error; the guard only reports now",
            invocations=self.invocations,
        )

    def _start(self) -> dict[str, int]:
        """End of the first invocation: baseline, jitter draw, effective limits."""
        self.started = True
        cut = self.config.jitter * self._rand()
        self._fd_threshold = None  # measure the baseline exactly
        self.baseline = self._measure()
        self.growth = {
            name: Growth(value, self.maxima[name]) for name, value in self.baseline.items()
        }
        self._unreachable_said = set()
        configured = {
            "fd": self.config.fd_limit.value if self.config.fd_limit else None,
            "memory": self.config.memory_limit.value if self.config.memory_limit else None,
        }
        below = []
        for reason, base in self.baseline.items():
            limit = configured[reason]
            if limit is None:
                self.limits[reason] = None
            elif limit <= base:  # a fresh environment starts over it: recycling cannot help
                self.limits[reason] = None
                below.append({"reason": reason, "limit": limit, "baseline": base})
            else:
                self.limits[reason] = _effective(limit, base, cut)
        thresholds = [x for x in (self.limits.get("fd"), self.ceilings["fd"]) if x is not None]
        self._fd_threshold = min(thresholds) if thresholds else None
        if self.config.max_invocations is not None:
            self.limits["max_invocations"] = max(
                1, math.ceil(self.config.max_invocations * (1 - cut))
            )
        if below:
            from lambda_conn._log import WARNING, log_event

            log_event(
                WARNING,
                "health_limit_below_baseline",
                limits=below,
                note="limit disabled; the hard ceiling still applies",
            )
        return self.baseline

    def _measure(self) -> dict[str, int]:
        measured = {}
        if self.config.fd_limit is not None and not self._fds_surely_under():
            measured["fd"] = self._count_fds()
        memory = self.config.memory_limit
        if memory is not None and memory.value is not None:
            measured["memory"] = self._read_rss()
        self._measured = measured
        return measured

    def _fds_surely_under(self) -> bool:
        """True when a cheap upper bound already proves the count under the threshold,
        and far enough under the maximum that no projection from there could reach it."""
        threshold, bound = self._fd_threshold, self._fd_upper_bound
        if threshold is None or bound is None:
            return False
        most = bound()
        if most is None or most > threshold:
            return False
        growth = self.growth.get("fd")
        return growth is None or not growth.near_from_bound(most)

    def _grown(self) -> None:
        """Record what this invocation left (after the collection, if one ran)."""
        measured = self._measured
        for name, growth in self.growth.items():
            value = measured.get(name)
            if value is None:
                growth.skipped()
            else:
                growth.record(value)

    def _unreachable(self, measured: dict[str, int], args: tuple[Any, ...]) -> None:
        """An invocation that grew by all the room it had: no check after it could have
        saved it. Say so honestly (once per environment and resource)."""
        for name, value in measured.items():
            maximum, growth = self.maxima.get(name), self.growth.get(name)
            if maximum is None or growth is None or value < maximum:
                continue
            if name in self._unreachable_said or value <= growth.last:
                continue
            self._unreachable_said.add(name)
            from lambda_conn._log import WARNING, log_event

            _, context = event_and_context(args)
            log_event(
                WARNING,
                "health_limit_unreachable",
                resource=name,
                jump=value - growth.last,
                room_left=maximum - growth.last,
                measured=value,
                hard_max=maximum,
                invocations=self.invocations,
                request_id=getattr(context, "aws_request_id", None),
                note="this invocation needed at least all the room it had left; a check "
                "after an invocation cannot prevent that, only recycle after it",
            )

    def _breach(self, measured: dict[str, int]) -> Breach | None:
        """The most urgent breach: the ceiling, then a projection, then a limit."""
        over = projected = None
        growth = self.growth
        for reason, value in measured.items():
            limit = self.limits.get(reason)
            ceiling = self.ceilings.get(reason)
            if ceiling is not None and value > ceiling:
                over_limit = limit is not None and value > limit
                return Breach(reason, value, limit if over_limit and limit else ceiling, True)
            if over is None and limit is not None and value > limit:
                over = Breach(reason, value, limit, False)
            grown = growth.get(reason)
            if projected is None and grown is not None and value >= grown.watch:  # near()
                projected = self._projected(reason, value, grown)
        if projected is not None or over is not None:
            return projected or over
        most = self.limits.get("max_invocations")
        if most is not None and self.invocations >= most:
            return Breach("max_invocations", self.invocations, most, False)
        return None

    def _projected(self, reason: str, value: int, growth: Growth) -> Breach | None:
        """A breach when the next invocation or two at the measured rate reach the maximum."""
        maximum = growth.maximum
        rate, horizon, projection = growth.projection(value)
        if projection < maximum:
            return None
        extra = {"resource": reason, "rate": rate, "horizon": horizon, "projection": projection}
        return Breach("projected", value, maximum, False, extra)

    def _ceiling_first(self, breach: Breach) -> bool:
        """True when, at the sustained rate and this environment's request rate, usage
        reaches the hard ceiling before the minimum lifetime ends: deferring would not keep
        the environment alive that long, only let it run up to the ceiling. (A baseline that
        is merely high shows no sustained growth and is deferred.)"""
        growth, ceiling = self.growth.get(breach.reason), self.ceilings.get(breach.reason)
        if growth is None or ceiling is None:
            return False
        rate = growth.sustained(breach.measured)
        if rate <= 0:
            return False
        age = self.age
        ahead = math.ceil((ceiling - breach.measured) / rate) * age / self.invocations
        if age + ahead >= self.config.min_lifetime:
            return False
        breach.extra.update(
            rate=round(rate, 3), ceiling_in_s=round(ahead, 3), overrides="min_lifetime"
        )
        return True

    def _decide(self, breach: Breach, trigger: Trigger) -> tuple[str, str | None]:
        """("recycle", None) or ("report", why not)."""
        if not self.platform.in_lambda:
            return "report", "outside_lambda"
        if self.config.report_only:
            return "report", "report_only"
        if self.platform.max_concurrency is not None:
            return "report", "multi_concurrency"
        if self._hook_broken or not self._recycler.available():
            return "report", "no_runtime_hook"
        if breach.at_ceiling or breach.reason == "projected":
            return "recycle", None  # about to fail anyway: better now, after a response
        if self.age < self.config.min_lifetime and not self._ceiling_first(breach):
            return "report", "min_lifetime"
        if trigger.retrying and self.config.retrying_triggers == "report":
            return "report", "retrying_trigger"
        return "recycle", None

    def _report_due(self) -> bool:
        last = self._last_report
        return last is None or self._clock() - last >= REPORT_INTERVAL_S

    def _act(
        self,
        action: str,
        deferred_by: str | None,
        breach: Breach,
        measured: dict[str, int],
        trigger: Trigger,
        args: tuple[Any, ...],
    ) -> None:
        self._last_report = self._clock()
        _, context = event_and_context(args)
        fields: dict[str, Any] = {
            "reason": breach.reason,
            "measured": breach.measured,
            "limit": breach.limit,
            "at_ceiling": breach.at_ceiling,
            "baseline": self.baseline.get(breach.extra.get("resource", breach.reason)),
            "invocations": self.invocations,
            "age_s": round(self.age, 3),
            "request_id": getattr(context, "aws_request_id", None),
            **{("fds" if k == "fd" else "rss_bytes"): v for k, v in measured.items()},
            **breach.extra,
            **trigger.fields(),
        }
        if deferred_by is not None:
            fields["deferred_by"] = deferred_by
        else:
            # What the platform will show: the answered request gets Runtime.ExitError.
            fields["expect"] = "Runtime.ExitError after the response was delivered"
        self._emit(action, fields, self.platform.function_name, self.platform.in_lambda)


def _request_id(args: tuple[Any, ...]) -> str | None:
    request_id = getattr(event_and_context(args)[1], "aws_request_id", None)
    return request_id if isinstance(request_id, str) else None


def event_and_context(args: tuple[Any, ...]) -> tuple[Any, Any]:
    """The (event, context) of a handler call, also for methods (``self`` comes first).

    The context is the argument with ``aws_request_id``; the event is the one before it.
    Without one (tests, local calls), the last two arguments.
    """
    for index, arg in enumerate(args):
        if index > 0 and hasattr(arg, "aws_request_id"):
            return args[index - 1], arg
    if len(args) >= 2:
        return args[-2], args[-1]
    return (args[0] if args else None), None
