"""The rendezvous between the API server's threads and the supervisor (RAPID's state).

One ``SandboxState`` exists per execution environment. HTTP threads call the
``runtime_*`` and ``extension_*`` methods (which may block, as the real endpoints do);
the supervisor calls ``dispatch`` and the ``wait_*`` methods. Everything is guarded by
one condition variable: a state change wakes the supervisor at once instead of on its
next poll, which keeps the per-invocation overhead low.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field

from lambda_conn.local._constants import MAX_RESPONSE_BYTES
from lambda_conn.local._extensions import ExtensionRegistry, RegistrationError

__all__ = ["FunctionMetadata", "Invocation", "Reply", "SandboxState"]


@dataclass(frozen=True)
class FunctionMetadata:
    """What ``/extension/register`` reports back about the function."""

    name: str
    version: str
    handler: str


@dataclass(frozen=True)
class Reply:
    """An HTTP answer for the server to write."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


def _json_reply(status: int, payload: object, *headers: tuple[str, str]) -> Reply:
    return Reply(
        status, json.dumps(payload).encode(), (("Content-Type", "application/json"), *headers)
    )


def _error_reply(status: int, error_type: str, message: str) -> Reply:
    return _json_reply(status, {"errorMessage": message, "errorType": error_type})


_ACCEPTED = _json_reply(202, {"status": "OK"})


@dataclass(eq=False)
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

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    def next_headers(self) -> tuple[tuple[str, str], ...]:
        """The headers of ``GET /runtime/invocation/next``."""
        return (
            ("Content-Type", "application/json"),
            ("Lambda-Runtime-Aws-Request-Id", self.request_id),
            ("Lambda-Runtime-Deadline-Ms", str(self.deadline_ms)),
            ("Lambda-Runtime-Invoked-Function-Arn", self.function_arn),
            ("Lambda-Runtime-Trace-Id", self.trace_id),
            ("Lambda-Runtime-Client-Context", ""),
            ("Lambda-Runtime-Cognito-Identity", ""),
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
        self._cond = threading.Condition()
        self._closed = False
        self._registry = ExtensionRegistry()
        self._runtime_ready = False
        self._runtime_next_calls = 0
        self._pending: Invocation | None = None
        self._current: Invocation | None = None
        self.init_error: bytes | None = None
        self.init_error_type: str | None = None

    # ----------------------------------------------------------------- runtime side
    def runtime_next(self) -> Invocation | Reply | None:
        """Block until an invocation is dispatched; None once the environment is gone."""
        with self._cond:
            if self._current is not None and not self._current.answered:
                return _error_reply(
                    403, "InvalidStateTransition", "/next called before answering the invoke"
                )
            self._current = None
            self._registry.close()
            self._runtime_ready = True
            self._runtime_next_calls += 1
            self._cond.notify_all()
            while self._pending is None and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            self._current, self._pending = self._pending, None
            return self._current

    def runtime_response(self, request_id: str, body: bytes) -> Reply:
        """Store the response *before* answering 202: the caller has it from this point."""
        with self._cond:
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
                self._answer(inv)
                return _error_reply(413, "RequestEntityTooLarge", message)
            inv.response = body
            self._answer(inv)
            return _ACCEPTED

    def runtime_error(self, request_id: str, body: bytes, error_type: str | None) -> Reply:
        with self._cond:
            inv, refused = self._answerable(request_id)
            if inv is None:
                return refused
            inv.error = body
            inv.error_type = error_type
            self._answer(inv)
            return _ACCEPTED

    def runtime_init_error(self, body: bytes, error_type: str | None) -> Reply:
        with self._cond:
            if self._runtime_next_calls:
                return _error_reply(403, "InvalidStateTransition", "init already completed")
            self.init_error = body
            self.init_error_type = error_type
            self._cond.notify_all()
            return _ACCEPTED

    def _answerable(self, request_id: str) -> tuple[Invocation | None, Reply]:
        inv = self._current
        if inv is None or inv.request_id != request_id:
            return None, _error_reply(400, "InvalidRequestID", "Invalid request ID")
        if inv.answered:
            return None, _error_reply(403, "InvalidStateTransition", "invocation already answered")
        return inv, _ACCEPTED

    def _answer(self, inv: Invocation) -> None:
        # No notify: the invoke ends only when the runtime is back at /next, which
        # notifies; an exit after answering is seen by the supervisor's poll.
        inv.answered_at = time.perf_counter()

    # --------------------------------------------------------------- extension side
    def extension_register(self, name: str, body: bytes) -> Reply:
        try:
            events = json.loads(body or b"{}").get("events", [])
        except (ValueError, AttributeError):
            return _error_reply(403, "InvalidRequestFormat", "body is not a JSON object")
        with self._cond:
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

    def extension_next(self, identifier: str) -> Reply | None:
        """Block until an event for this extension; None once the environment is gone."""
        with self._cond:
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
            self._cond.notify_all()
            while not ext.queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            event = ext.queue.popleft()
        return Reply(
            200,
            event,
            (
                ("Content-Type", "application/json"),
                ("Lambda-Extension-Event-Identifier", str(uuid.uuid4())),
            ),
        )

    # -------------------------------------------------------------- supervisor side
    def _init_done(self) -> bool:
        return (
            self._runtime_next_calls > 0
            and self._runtime_ready
            and all(ext.next_calls > 0 for ext in self._registry)
            and self._registry.all_ready()
        )

    def wait_init(self, timeout: float) -> bool:
        """True once Init ended: runtime at ``/next``, every extension at ``/event/next``,
        or an init error was posted."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self.init_error is not None or self._init_done(), timeout
            )

    def dispatch(self, inv: Invocation) -> None:
        """Hand the request to the runtime and an INVOKE event to subscribed extensions."""
        with self._cond:
            self._pending = inv
            self._runtime_ready = False
            event = inv.invoke_event()
            for ext in self._registry.subscribed("INVOKE"):
                ext.queue.append(event)
                ext.ready = False
            self._cond.notify_all()

    def wait_invoke(self, inv: Invocation, timeout: float) -> bool:
        """True once the invoke ended: answered, runtime back at ``/next``, extensions ready."""
        with self._cond:
            return self._cond.wait_for(
                lambda: inv.answered and self._runtime_ready and self._registry.all_ready(),
                timeout,
            )

    def extension_count(self) -> int:
        with self._cond:
            return len(self._registry)

    def close(self) -> None:
        """Release every blocked HTTP thread; their process is gone."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
