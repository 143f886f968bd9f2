"""Run a handler N times in one LocalLambda and keep what happened.

A soak is how a leak shows up before production: descriptors or memory that grow per
invocation, a pool that stops working after a freeze, a recycle that drops a request.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lambda_conn.local._constants import SPIN_S
from lambda_conn.local._environment import Output
from lambda_conn.local._lambda import LocalLambda
from lambda_conn.local._logtap import LogTap
from lambda_conn.local._records import InvocationRecord, ShutdownRecord
from lambda_conn.local._report import SoakSummary, summarize

__all__ = ["SoakInterrupted", "SoakReport", "soak"]

Progress = Callable[[int, InvocationRecord], None]


class SoakResult:
    """What a single-environment soak and a fleet soak both report: their rate, whether
    anything failed, and the head of their ``--json`` file."""

    handler: str
    memory_mb: int
    timeout_s: float
    wall_s: float
    records: Sequence[InvocationRecord]
    stopped_early: str | None
    summary: SoakSummary

    @property
    def rate(self) -> float:
        """Invocations per second of wall time, cold starts (and any --idle) included."""
        return len(self.records) / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def failed(self) -> bool:
        """True when any invocation failed as its caller saw it."""
        return self.summary.failed > 0

    def _head(self) -> dict[str, Any]:
        return {
            "handler": self.handler,
            "memory_mb": self.memory_mb,
            "timeout_s": self.timeout_s,
            "wall_s": self.wall_s,
            "invocations_per_s": self.rate,
            "stopped_early": self.stopped_early,
            "summary": self.summary.to_dict(),
        }


@dataclass(frozen=True)
class SoakReport(SoakResult):
    """Records, shutdowns and the summary of one soak; ``to_dict()`` is the --json file."""

    handler: str
    memory_mb: int
    timeout_s: float
    wall_s: float
    records: list[InvocationRecord]
    shutdowns: list[ShutdownRecord]
    #: Why the soak ended before ``n`` invocations (None: it ran them all).
    stopped_early: str | None = None
    #: ``rds_proxy_pinning`` lines the function logged, per statement class.
    pinning: dict[str, int] = field(default_factory=dict)
    summary: SoakSummary = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "summary", summarize(self.records, self.pinning))

    def to_dict(self) -> dict[str, Any]:
        return {
            **self._head(),
            "records": [r.to_dict() for r in self.records],
            "shutdowns": [s.to_dict() for s in self.shutdowns],
        }


def check_soak_options(n: object, max_init_failures: object) -> None:
    """What every soak, single or fleet, accepts as its count and its Init-failure stop."""
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n={n!r} is not accepted: expected a positive integer")
    if max_init_failures is not None and (
        isinstance(max_init_failures, bool)
        or not isinstance(max_init_failures, int)
        or max_init_failures <= 0
    ):
        raise ValueError(
            f"max_init_failures={max_init_failures!r} is not accepted: expected a positive "
            "integer or None"
        )


def spin_s(spin: object) -> float:
    """How long a soak's API polls before sleeping: ``SPIN_S`` when ``spin`` and this
    process may run on two cores or more (on one, the spin would take the runtime's turn),
    else 0."""
    if not isinstance(spin, bool):
        raise ValueError(f"spin={spin!r} is not accepted: expected True or False")
    return SPIN_S if spin and len(os.sched_getaffinity(0)) >= 2 else 0.0


def soak(
    handler: str,
    n: int,
    *,
    event: Any = None,
    handler_dir: str | os.PathLike[str] | None = None,
    memory_mb: int = 128,
    timeout_s: float = 3.0,
    env: Mapping[str, str] | None = None,
    output: Output = None,
    progress: Progress | None = None,
    keep_responses: bool = False,
    max_init_failures: int | None = 10,
    spin: bool = True,
) -> SoakReport:
    """Invoke ``handler`` ``n`` times with ``event``, then spin the environment down.

    Successful responses are dropped from the records unless ``keep_responses``: a
    handler answering 1 MB would otherwise hold 10 GB after 10,000 invocations. Errors
    are always kept. After ``max_init_failures`` Init failures in a row (a typo in the
    handler's name, a missing dependency) the soak stops: every further invocation would
    fail the same way. Ctrl-C raises ``SoakInterrupted``, which carries the records so far.

    ``spin``: while it waits for the runtime's next request the supervisor polls for
    ``SPIN_S`` before it sleeps (where it has two cores): more CPU, and the supervisor's
    wake-up no longer paces the soak. ``spin=False`` sleeps at once.
    """
    check_soak_options(n, max_init_failures)
    spin_for = spin_s(spin)
    payload = json.dumps(event).encode()  # once: every invocation sends the same event
    stopped: str | None = None
    # The function's output passes through a tap that counts the events the summary shows.
    with (
        LogTap(output) as tap,
        LocalLambda(
            handler,
            handler_dir=handler_dir,
            memory_mb=memory_mb,
            timeout_s=timeout_s,
            env=env,
            output=tap.fd,
        ) as fn,
    ):
        fn._spin_s = spin_for
        records = fn.records
        init_failures = 0
        start = time.perf_counter()
        try:
            for done in range(1, n + 1):
                record = fn._invoke(payload, keep_response=keep_responses, more=done < n)
                if progress is not None:
                    progress(done, record)
                init_failures = init_failures + 1 if record.reset_reason == "init_error" else 0
                if max_init_failures is not None and init_failures >= max_init_failures:
                    stopped = (
                        f"Init failed {init_failures} times in a row: {record.error_type}: "
                        f"{record.error_message}"
                    )
                    break
        except KeyboardInterrupt:
            stopped = "interrupted"
        wall = time.perf_counter() - start
    report = SoakReport(
        handler=fn.config.spec.lambda_form,
        memory_mb=fn.config.memory_mb,
        timeout_s=fn.config.timeout_s,
        wall_s=wall,
        records=list(records),
        shutdowns=list(fn.shutdowns),
        stopped_early=stopped,
        pinning=dict(tap.classes["rds_proxy_pinning"]),
    )
    if stopped == "interrupted":
        raise SoakInterrupted(report)
    return report


class SoakInterrupted(KeyboardInterrupt):
    """Ctrl-C during a soak, with what it had recorded (``.report``) once cleaned up."""

    def __init__(self, report: SoakReport) -> None:
        super().__init__(f"soak interrupted after {len(report.records)} invocations")
        self.report = report
