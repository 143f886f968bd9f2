"""``LocalLambda``: invoke a handler the way Lambda does, one execution environment at a time.

The invoke cycle: thaw (or cold-start), dispatch, wait for the answer *and* for the
runtime and every extension to ask for more, measure, freeze. Whatever ends it early
(exit, memory, timeout) resets the environment, and the next invoke starts cold.

A soak's next invocation is dispatched as soon as the last one has been measured (its
record is built while the runtime works): with no gap between the two there is nothing to
freeze, and a SIGSTOP straight followed by SIGCONT would stop no thread for any time, so
the environment is frozen only when it waits for an invoke that is not already there.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import threading
import time
from collections.abc import Mapping
from typing import Any, Literal

from lambda_conn.local._config import FunctionConfig
from lambda_conn.local._constants import INIT_TIMEOUT_S
from lambda_conn.local._environment import ExecutionEnvironment, Output
from lambda_conn.local._records import InvocationRecord, Outcome, ResetReason, ShutdownRecord
from lambda_conn.local._state import Invocation

__all__ = ["LocalLambda"]

_InitFailure = Literal["exit", "memory", "timeout", "init_error"]


def _decode(body: bytes) -> Any:
    try:
        try:  # UTF-8 first: json.loads(bytes) would detect the encoding every time
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return json.loads(body)  # UTF-16 or UTF-32, as json.loads reads them
        return json.loads(text)
    except ValueError:
        return body.decode("utf-8", "replace")


#: Invocations whose ids one read of the kernel's random source gives (36 bytes each):
#: a ``getrandom`` per 64 invocations instead of one per invocation.
_IDS_PER_READ = 64


def _ids(h: str) -> tuple[str, str]:
    """A request id (a random version 4 UUID, as ``str(uuid.uuid4())`` in a third of
    its time) and an X-Ray trace id, from 72 random hex digits."""
    variant = "89ab"[int(h[16], 16) & 3]
    request_id = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"
    return request_id, f"Root=1-{int(time.time()):08x}-{h[32:56]};Parent={h[56:]};Sampled=0"


def _exit_message(request_id: str, status: int | None) -> str:
    """Lambda's wording for a runtime that died (Go's os/exec phrasing)."""
    if status == 0:
        return f"RequestId: {request_id} Error: Runtime exited without providing a reason"
    if status is None:
        reason = "unknown"
    elif status < 0:
        reason = f"signal: {(signal.strsignal(-status) or str(-status)).lower()}"
    else:
        reason = f"exit status {status}"
    return f"RequestId: {request_id} Error: Runtime exited with error: {reason}"


class LocalLambda:
    """A function under test: ``with LocalLambda("app.handler", handler_dir=...) as fn:``.

    ``handler`` is ``module.function`` or ``module:function``; ``handler_dir`` (default:
    the current directory) is the task root. ``output`` receives the runtime's
    stdout/stderr (None inherits ours; pass ``subprocess.DEVNULL`` or a file).
    """

    def __init__(
        self,
        handler: str,
        *,
        handler_dir: str | os.PathLike[str] | None = None,
        memory_mb: int = 128,
        timeout_s: float = 3.0,
        env: Mapping[str, str] | None = None,
        function_name: str | None = None,
        init_timeout_s: float = INIT_TIMEOUT_S,
        output: Output = None,
    ) -> None:
        self.config = FunctionConfig.create(
            handler,
            handler_dir=handler_dir,
            memory_mb=memory_mb,
            timeout_s=timeout_s,
            env=env,
            function_name=function_name,
            init_timeout_s=init_timeout_s,
        )
        self._output = output
        self._lock = threading.Lock()
        self._env: ExecutionEnvironment | None = None
        self._generation = 0
        self._records: list[InvocationRecord] = []
        self._shutdowns: list[ShutdownRecord] = []
        self._closed = False
        self._random_hex = ""  # random digits for the next invocations' ids
        self._random_at = 0
        #: An invocation already dispatched for the next ``_invoke(more=...)``, and its start.
        self._inflight: tuple[Invocation, float] | None = None
        #: How long its environments' API polls before sleeping (``SPIN_S``; a soak's).
        self._spin_s = 0.0
        atexit.register(self._kill_at_exit)

    def __repr__(self) -> str:
        cfg = self.config
        return (
            f"LocalLambda({cfg.spec.lambda_form!r}, memory_mb={cfg.memory_mb}, "
            f"timeout_s={cfg.timeout_s:g}, invocations={len(self._records)})"
        )

    @property
    def records(self) -> list[InvocationRecord]:
        """Every invocation so far, in order (the live list)."""
        return self._records

    @property
    def shutdowns(self) -> list[ShutdownRecord]:
        """Every environment that ended: resets after a failure and spin-downs."""
        return self._shutdowns

    # ------------------------------------------------------------------- public
    def invoke(self, event: Any = None) -> InvocationRecord:
        """Run one invocation synchronously and return its record (also kept in ``records``)."""
        return self._invoke(json.dumps(event).encode(), keep_response=True)

    def _invoke(
        self, payload: bytes, *, keep_response: bool, more: bool = False
    ) -> InvocationRecord:
        """``invoke`` of an event already encoded; a successful response is neither
        decoded nor kept unless ``keep_response`` (a soak's default: built right the
        first time, not copied without it afterwards).

        ``more``: the caller will invoke again at once with the same payload (a soak
        before its last invocation). The next invocation is then handed over as the
        runtime asks for it, once this one has been measured, and this one's record is
        built while the runtime works on the next: on a machine with two cores the
        supervisor's bookkeeping leaves the path between a ``/next`` and its event."""
        with self._lock:
            if self._closed:
                raise RuntimeError("this LocalLambda is closed; create a new one to invoke again")
            try:
                record = self._invoke_locked(payload, keep_response, more)
            except BaseException:
                self._reset("interrupted", kill=True)
                raise
            self._records.append(record)
            return record

    def _new_invocation(self, payload: bytes) -> Invocation:
        at = self._random_at
        if at >= len(self._random_hex):
            self._random_hex, at = os.urandom(36 * _IDS_PER_READ).hex(), 0
        self._random_at = at + 72
        request_id, trace_id = _ids(self._random_hex[at : at + 72])
        return Invocation(
            request_id=request_id,
            payload=payload,
            deadline_ms=0,  # set by _dispatch, when the clock starts
            trace_id=trace_id,
            function_arn=self.config.function_arn,
        )

    def _dispatch(self, env: ExecutionEnvironment, inv: Invocation) -> float:
        """Start ``inv``'s clock and hand it to the (frozen) runtime; returns the start."""
        inv.deadline_ms = time.time_ns() // 1_000_000 + int(self.config.timeout_s * 1000)
        start = time.perf_counter()
        env.dispatch(inv)
        return start

    def shutdown(self) -> ShutdownRecord | None:
        """Spin the environment down as Lambda does; the next invoke is a cold start."""
        with self._lock:
            return self._reset("spindown", kill=False)

    def close(self) -> None:
        """Shut down and refuse further invokes; safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._reset("spindown", kill=False)
            finally:
                atexit.unregister(self._kill_at_exit)

    def abort(self) -> None:
        """SIGKILL the current environment now, from any thread and without the lock: an
        invoke in progress ends as a crash and the environment resets (a fleet's Ctrl-C)."""
        env = self._env
        if env is not None:
            env.kill_now()

    def dispatched_ahead_at(self) -> float | None:
        """When (``time.perf_counter()``) the invocation promised by the last
        ``_invoke(more=True)`` was handed to the runtime; None if there is none."""
        inflight = self._inflight
        return None if inflight is None else inflight[1]

    def supervisor_descriptors(self) -> int | None:
        """What the current environment holds of this process's descriptors (None when
        none is up); from the thread that invoked it, between invokes."""
        env = self._env
        return None if env is None else env.supervisor_descriptors()

    def __enter__(self) -> LocalLambda:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internal
    def _reset(self, reason: str, *, kill: bool) -> ShutdownRecord | None:
        env, self._env = self._env, None
        if self._inflight is not None:  # dispatched for an invoke that never came
            self._inflight = None
            reason, kill = "interrupted", True
        if env is None:
            return None
        record = env.kill(reason) if kill else env.shut_down(reason)
        self._shutdowns.append(record)
        return record

    def _kill_at_exit(self) -> None:
        env = self._env
        if env is not None:
            env.kill("interpreter-exit")

    def _invoke_locked(self, payload: bytes, keep_response: bool, more: bool) -> InvocationRecord:
        env = self._env
        inflight, self._inflight = self._inflight, None
        if env is not None and inflight is not None:  # dispatched by the previous invoke
            inv, start = inflight
            if inv.payload is payload or inv.payload == payload:
                return self._run(env, inv, start, keep_response, more, cold=False, init_ms=None)
            # not what was promised: the runtime is working on an event nobody asked for
            self._reset("interrupted", kill=True)
            env = None
        inv = self._new_invocation(payload)
        if env is not None:  # frozen: ``dispatch`` thaws it
            start = self._dispatch(env, inv)
            return self._run(env, inv, start, keep_response, more, cold=False, init_ms=None)
        env = self._start_environment()
        self._env = env  # so that an interrupt during Init still kills it
        failure, init_ms = self._wait_init(env)
        if failure is None:
            start = self._dispatch(env, inv)
            return self._run(env, inv, start, keep_response, more, cold=True, init_ms=init_ms)
        self._env = None
        return self._init_failure(env, inv.request_id, failure, init_ms)

    def _start_environment(self) -> ExecutionEnvironment:
        self._generation += 1
        env = ExecutionEnvironment(self.config, self._generation, self._output, self._spin_s)
        env.start()
        return env

    def _wait_init(self, env: ExecutionEnvironment) -> tuple[_InitFailure | None, float]:
        """Wait for Init (runtime at /next, extensions at /event/next) under Lambda's limits."""
        start = time.perf_counter()
        failure: _InitFailure | None = env.wait(
            env.state.init_done, start + self.config.init_timeout_s, self.config.memory_bytes
        )
        if env.state.init_error is not None:
            failure = "init_error"
        return failure, (time.perf_counter() - start) * 1000

    def _init_failure(
        self,
        env: ExecutionEnvironment,
        request_id: str,
        failure: _InitFailure,
        init_ms: float,
    ) -> InvocationRecord:
        if failure == "init_error":  # awslambdaric exits right after posting; let it
            env.wait(env.exited, time.perf_counter() + 1.0, self.config.memory_bytes)
        shutdown = env.shut_down("timeout") if failure == "timeout" else env.kill(failure)
        self._shutdowns.append(shutdown)
        status = env.exit_status()
        response: dict[str, Any]
        if failure == "init_error":
            body = _decode(env.state.init_error or b"")
            response = body if isinstance(body, dict) else {"errorMessage": str(body)}
            response.setdefault("errorType", env.state.init_error_type or "Runtime.Unknown")
            outcome: Outcome = "function_error"
        else:
            outcome, response = self._kill_outcome(failure, request_id, status, init=True)
        return self._record(
            env,
            request_id,
            outcome,
            response,
            duration_ms=0.0,
            response_ms=None,
            cold=True,
            init_ms=init_ms,
            exited_after_response=False,
            reset_reason="init_error",
            sigterm_sent=shutdown.sigterm_sent,
        )

    def _kill_outcome(
        self, ending: _InitFailure, request_id: str, status: int | None, *, init: bool
    ) -> tuple[Outcome, dict[str, Any]]:
        """What the caller sees when the sandbox died before answering."""
        if ending == "memory":
            return "memory", {
                "errorType": "Runtime.OutOfMemory",
                "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: "
                "signal: killed",
            }
        if ending == "timeout":
            limit = self.config.init_timeout_s if init else self.config.timeout_s
            phase = "Init" if init else "Task"
            return "timeout", {
                "errorType": "Sandbox.Timedout",
                "errorMessage": f"RequestId: {request_id} Error: {phase} timed out after "
                f"{limit:.2f} seconds",
            }
        return "crash", {
            "errorType": "Runtime.ExitError",
            "errorMessage": _exit_message(request_id, status),
        }

    def _run(
        self,
        env: ExecutionEnvironment,
        inv: Invocation,
        start: float,
        keep_response: bool,
        more: bool,
        *,
        cold: bool,
        init_ms: float | None,
    ) -> InvocationRecord:
        """Wait for ``inv`` (dispatched at ``start``), measure, freeze, record it.

        ``more``: the next invocation is queued with the API, which hands it over as the
        runtime asks for it (no extension registered); otherwise it is dispatched here."""
        limit = self.config.memory_bytes
        env_state = env.state
        following = None
        if more:
            following = self._new_invocation(inv.payload)
            if not env_state.extension_count():
                env.queue(following, limit)
        ending = env.wait(lambda: env_state.invoke_done(inv), start + self.config.timeout_s, limit)
        taken = following is not None and following.dispatched_at is not None
        # Taken: no extension, so the invoke ended as the runtime came back to /next.
        end = inv.ended_at if taken and inv.ended_at is not None else time.perf_counter()
        if not taken:
            env_state.unqueue()
            if ending is None:
                _, rss = env.sample()
                if rss is not None and rss > limit:
                    ending = "memory"
        sampled = env.last_fds, env.last_rss  # before the next invocation can change them
        sigterm_sent: bool | None = None
        if ending is None:
            if taken:  # the API handed it over: it runs while this one's record is built
                assert following is not None and following.dispatched_at is not None
                self._inflight = following, following.dispatched_at
            elif following is not None:  # not taken, but wanted: dispatched from here
                self._inflight = following, self._dispatch(env, following)
            else:
                env.freeze()
        else:
            self._env = None
            shutdown = env.shut_down("timeout") if ending == "timeout" else env.kill(ending)
            self._shutdowns.append(shutdown)
            sigterm_sent = shutdown.sigterm_sent

        reset_reason: ResetReason | None
        response: Any
        if inv.answered:
            if inv.error is not None:
                error = _decode(inv.error)
                response = error if isinstance(error, dict) else {"errorMessage": str(error)}
                if inv.error_type and "errorType" not in response:
                    response["errorType"] = inv.error_type
                outcome: Outcome = "function_error"
            else:
                response = _decode(inv.response or b"") if keep_response else None
                outcome = "ok"
            reset_reason = "exited_after_response" if ending == "exit" else ending
        else:
            assert ending is not None  # the loop only ends unanswered by a kill or exit
            outcome, response = self._kill_outcome(
                ending, inv.request_id, env.exit_status(), init=False
            )
            reset_reason = "crash" if ending == "exit" else ending
        return self._record(
            env,
            inv.request_id,
            outcome,
            response,
            duration_ms=(end - start) * 1000,
            response_ms=None if inv.answered_at is None else (inv.answered_at - start) * 1000,
            cold=cold,
            init_ms=init_ms,
            exited_after_response=inv.answered and ending == "exit",
            reset_reason=reset_reason,
            sigterm_sent=sigterm_sent,
            sampled=sampled,
        )

    def _record(
        self,
        env: ExecutionEnvironment,
        request_id: str,
        outcome: Outcome,
        response: Any,
        *,
        duration_ms: float,
        response_ms: float | None,
        cold: bool,
        init_ms: float | None,
        exited_after_response: bool,
        reset_reason: ResetReason | None,
        sigterm_sent: bool | None,
        sampled: tuple[int | None, int | None] | None = None,
    ) -> InvocationRecord:
        """``sampled``: (descriptors, RSS) measured at the invocation's end, when the
        environment may have moved on since (default: its last values now)."""
        fds, rss = (env.last_fds, env.last_rss) if sampled is None else sampled
        error = response if outcome != "ok" and isinstance(response, dict) else {}
        stack = error.get("stackTrace")
        return InvocationRecord(
            index=len(self._records),
            request_id=request_id,
            outcome=outcome,
            error_type=error.get("errorType"),
            error_message=error.get("errorMessage"),
            stack_trace=list(stack) if isinstance(stack, list) else None,
            response=response,
            duration_ms=duration_ms,
            response_ms=response_ms,
            cold_start=cold,
            init_duration_ms=init_ms,
            fd_count=fds,
            rss_bytes=rss,
            exited_after_response=exited_after_response,
            reset_reason=reset_reason,
            exit_status=env.exit_status(),
            sigterm_sent=sigterm_sent,
            environment=env.generation,
        )
