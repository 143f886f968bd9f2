"""What one invocation and one shutdown looked like, from the caller's and the sandbox's side.

Records are plain dataclasses so a soak of 10,000 invocations stays cheap to keep and
serialises to JSON without help.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["OUTCOMES", "InvocationRecord", "Outcome", "ResetReason", "ShutdownRecord"]

Outcome = Literal["ok", "function_error", "timeout", "memory", "crash"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "function_error", "timeout", "memory", "crash")

# Why the execution environment was thrown away after an invocation.
ResetReason = Literal["exited_after_response", "timeout", "memory", "crash", "init_error"]


@dataclass(frozen=True, slots=True)
class InvocationRecord:
    """One invoke as the caller saw it (``outcome``, ``response``) plus sandbox measurements.

    ``fd_count`` and ``rss_bytes`` are measured after the runtime called ``/next`` again
    and before the freeze, or are the last values sampled before the process died.
    """

    index: int
    request_id: str
    outcome: Outcome
    error_type: str | None
    error_message: str | None
    stack_trace: list[str] | None
    response: Any
    duration_ms: float
    response_ms: float | None
    cold_start: bool
    init_duration_ms: float | None
    fd_count: int | None
    rss_bytes: int | None
    exited_after_response: bool
    reset_reason: ResetReason | None
    exit_status: int | None
    sigterm_sent: bool | None
    environment: int

    @property
    def ok(self) -> bool:
        """True when the caller got a normal response (even if the sandbox died after it)."""
        return self.outcome == "ok"

    @property
    def recycled(self) -> bool:
        """True when the environment was reset after this invocation, for any reason."""
        return self.reset_reason is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (the response is already decoded JSON or text)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ShutdownRecord:
    """How one execution environment ended when it was spun down or reset.

    ``sigterm_sent`` is False when no extension was registered: Lambda then SIGKILLs the
    runtime straight away, so no Python cleanup can run.
    """

    environment: int
    reason: str
    extensions: int
    sigterm_sent: bool
    exited_within_grace: bool
    exit_status: int | None
    duration_ms: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping."""
        return dataclasses.asdict(self)
