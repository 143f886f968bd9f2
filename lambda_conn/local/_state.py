"""RAPID's state of one execution environment, as a state machine that never blocks.

One ``SandboxState`` exists per execution environment. The API server calls the
``runtime_*`` and ``extension_*`` methods for each request; a request that Lambda holds
open (``/next``, ``/event/next``) is *parked* by the server, which asks the matching
``*_take`` method for its answer after each dispatch. The supervisor calls ``dispatch``
and tests ``init_done`` / ``invoke_done`` while it serves the API itself, in the thread
that waits for the invocation: no hand-off between threads on the way.

Not thread-safe: one thread at a time drives an environment (the one invoking it).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from lambda_conn.local._constants import MAX_RESPONSE_BYTES
from lambda_conn.local._extensions import Extension, ExtensionRegistry, RegistrationError

__all__ = ["ACCEPTED", "FunctionMetadata", "Invocation", "Reply", "SandboxState"]


@dataclass(frozen=True)
class FunctionMetadata:
    """What ``/extension/register`` reports back about the function."""

    name: str
    version: str
    handler: str


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer for the server to write."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    #: Header lines already rendered ("Name: value\r\n" each), after ``headers``.
    head: str = ""


def _json_reply(status: int, payload: object, *headers: tuple[str, str]) -> Reply:
    return Reply(
        status, json.dumps(payload).encode(), (("Content-Type", "application/json"), *headers)
    )


def _error_reply(status: int, error_type: str, message: str) -> Reply:
    return _json_reply(status, {"errorMessage": message, "errorType": error_type})


#: The answer to a posted response or error; the server keeps its wire form.
ACCEPTED = _json_reply(202, {"status": "OK"})


@dataclass(eq=False, slots=True)
class Invocation:
    """One request handed to the runtime, and what the runtime posted back."""

    request_id: str
    payload: bytes
    deadline_ms: int
    trace_id: str
    function_arn: str
    response: bytes | None = None
    error: bytes | None = None
    error_type: str | None = None
    answered_at: float | None = field(default=None)
    #: When the runtime came back to ``/next`` after answering it (perf_counter).
    ended_at: float | None = None
    #: When it was handed to the runtime by the API itself (a queued invocation).
    dispatched_at: float | None = None

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    def next_head(self) -> str:
        """The header lines of ``GET /runtime/invocation/next``, rendered in one go (a
        tuple of pairs rendered one by one cost 4 us an invocation)."""
        return (
            "Content-Type: application/json\r\n"
            f"Lambda-Runtime-Aws-Request-Id: {self.request_id}\r\n"
            f"Lambda-Runtime-Deadline-Ms: {self.deadline_ms}\r\n"
            f"Lambda-Runtime-Invoked-Function-Arn: {self.function_arn}\r\n"
            f"Lambda-Runtime-Trace-Id: {self.trace_id}\r\n"
            "Lambda-Runtime-Client-Context: \r\n"
            "Lambda-Runtime-Cognito-Identity: \r\n"
        )

    def invoke_event(self) -> bytes:
        """The INVOKE event an extension receives from ``/event/next``."""
        return json.dumps(
            {
                "eventType": "INVOKE",
                "deadlineMs": self.deadline_ms,
                "requestId": self.request_id,
                "invokedFunctionArn": self.function_arn,
                "tracing": {"type": "X-Amzn-Trace-Id", "value": self.trace_id},
            }
        ).encode()


class SandboxState:
    """RAPID's view of one execution environment; see the module docstring."""

    def __init__(self, metadata: FunctionMetadata) -> None:
        self._metadata = metadata
        self._registry = ExtensionRegistry()
        self._runtime_ready = False
        self._runtime_next_calls = 0
        self._pending: Invocation | None = None
        self._current: Invocation | None = None
        # The next invocation, queued for the runtime's next ``/next`` (see ``queue``).
        self._queued: Invocation | None = None
        self._queued_timeout_ms = 0
        self._between: Callable[[], bool] | None = None
        self.init_error: bytes | None = None
        self.init_error_type: str | None = None

    # ----------------------------------------------------------------- runtime side
    def runtime_next(self) -> Reply | None:
        """The runtime is at ``/next``: an error to answer at once, or None to park the
        request until ``runtime_take`` has an invocation for it."""
        current = self._current
        if current is not None:
            if not current.answered:
                return _error_reply(
                    403, "InvalidStateTransition", "/next called before answering the invoke"
                )
            current.ended_at = time.perf_counter()
        self._current = None
        self._registry.close()
        self._runtime_ready = True
        self._runtime_next_calls += 1
        return None

    def runtime_take(self) -> Reply | None:
        """The answer of a parked ``/next``: the dispatched invocation, or None (wait)."""
        inv = self._pending
        if inv is None:
            inv = self._take_queued()
            if inv is None:
                return None
        self._current, self._pending = inv, None
        return Reply(200, inv.payload, head=inv.next_head())

    def _take_queued(self) -> Invocation | None:
        """The queued invocation, started now, once the invoke before it has ended (the
        runtime at ``/next``, no extension to wait for) and ``between()`` lets it go."""
        inv = self._queued
        if inv is None or not self._runtime_ready or len(self._registry):
            return None
        between = self._between
        if between is not None and not between():
            return None
        self._queued = self._between = None
        inv.deadline_ms = time.time_ns() // 1_000_000 + self._queued_timeout_ms
        inv.dispatched_at = time.perf_counter()
        self._runtime_ready = False
        return inv

    def runtime_response(self, request_id: str, body: bytes) -> Reply:
        """Store the response *before* answering 202: the caller has it from this point."""
        inv, refused = self._answerable(request_id)
        if inv is None:
            return refused
        if len(body) > MAX_RESPONSE_BYTES:
            message = (
                f"Response payload size ({len(body)} bytes) exceeded maximum allowed "
                f"payload size ({MAX_RESPONSE_BYTES} bytes)."
            )
            inv.error = json.dumps(
                {"errorMessage": message, "errorType": "Function.ResponseSizeTooLarge"}
            ).encode()
            inv.error_type = "Function.ResponseSizeTooLarge"
            inv.answered_at = time.perf_counter()
            return _error_reply(413, "RequestEntityTooLarge", message)
        inv.response = body
        inv.answered_at = time.perf_counter()
        return ACCEPTED

    def runtime_error(self, request_id: str, body: bytes, error_type: str | None) -> Reply:
        inv, refused = self._answerable(request_id)
        if inv is None:
            return refused
        inv.error = body
        inv.error_type = error_type
        inv.answered_at = time.perf_counter()
        return ACCEPTED

    def runtime_init_error(self, body: bytes, error_type: str | None) -> Reply:
        if self._runtime_next_calls:
            return _error_reply(403, "InvalidStateTransition", "init already completed")
        self.init_error = body
        self.init_error_type = error_type
        return ACCEPTED

    def _answerable(self, request_id: str) -> tuple[Invocation | None, Reply]:
        inv = self._current
        if inv is None or inv.request_id != request_id:
            return None, _error_reply(400, "InvalidRequestID", "Invalid request ID")
        if inv.answered:
            return None, _error_reply(403, "InvalidStateTransition", "invocation already answered")
        return inv, ACCEPTED

    # --------------------------------------------------------------- extension side
    def extension_register(self, name: str, body: bytes) -> Reply:
        try:
            events = json.loads(body or b"{}").get("events", [])
        except (ValueError, AttributeError):
            return _error_reply(403, "InvalidRequestFormat", "body is not a JSON object")
        try:
            ext = self._registry.register(name, events)
        except RegistrationError as exc:
            return _error_reply(403, exc.error_type, exc.message)
        meta = self._metadata
        return _json_reply(
            200,
            {"functionName": meta.name, "functionVersion": meta.version, "handler": meta.handler},
            ("Lambda-Extension-Identifier", ext.identifier),
        )

    def extension_next(self, identifier: str) -> Reply | Extension:
        """The extension is at ``/event/next``: an error to answer at once, or the
        extension whose parked request ``extension_take`` answers."""
        if not identifier:
            return _error_reply(
                403, "Extension.MissingHeader", "Lambda-Extension-Identifier header missing"
            )
        ext = self._registry.get(identifier)
        if ext is None:
            return _error_reply(
                403, "Extension.UnknownExtensionIdentifier", f"Unknown extension {identifier}"
            )
        ext.ready = True
        ext.next_calls += 1
        return ext

    @staticmethod
    def extension_take(ext: Extension) -> Reply | None:
        """The answer of a parked ``/event/next``: its next event, or None (wait)."""
        if not ext.queue:
            return None
        return Reply(
            200,
            ext.queue.popleft(),
            (
                ("Content-Type", "application/json"),
                ("Lambda-Extension-Event-Identifier", str(uuid.uuid4())),
            ),
        )

    # -------------------------------------------------------------- supervisor side
    def init_done(self) -> bool:
        """True once Init ended: runtime at ``/next``, every extension at ``/event/next``,
        or an init error was posted."""
        return self.init_error is not None or (
            self._runtime_next_calls > 0
            and self._runtime_ready
            and all(ext.next_calls > 0 for ext in self._registry)
            and self._registry.all_ready()
        )

    def dispatch(self, inv: Invocation) -> None:
        """Hand the request to the runtime and an INVOKE event to subscribed extensions
        (the server then answers the parked requests)."""
        self._pending = inv
        self._runtime_ready = False
        subscribed = self._registry.subscribed("INVOKE")
        if subscribed:
            event = inv.invoke_event()
            for ext in subscribed:
                ext.queue.append(event)
                ext.ready = False

    def queue(self, inv: Invocation, timeout_ms: int, between: Callable[[], bool]) -> None:
        """Answer the runtime's next ``/next`` with ``inv`` right away, from the API
        itself, once the current invoke has ended and ``between()`` (the supervisor's
        measurement of the ended invoke) returns True; ``inv``'s deadline starts then.
        Only without extensions (with them, ``dispatch`` after ``invoke_done``). Whoever
        queued it takes it back with ``unqueue`` when it was not taken."""
        self._queued, self._queued_timeout_ms, self._between = inv, timeout_ms, between

    def unqueue(self) -> Invocation | None:
        """The queued invocation if the runtime was not handed it (then never will be)."""
        inv, self._queued, self._between = self._queued, None, None
        return inv

    def invoke_done(self, inv: Invocation) -> bool:
        """True once the invoke ended: answered, runtime back at ``/next``, extensions ready."""
        return inv.ended_at is not None and self._registry.all_ready()

    def extension_count(self) -> int:
        return len(self._registry)
