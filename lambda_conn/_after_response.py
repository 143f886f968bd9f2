"""Work that runs once awslambdaric has posted the response: the caller no longer waits.

The platform writes the payload to the caller before it answers the runtime's POST, so
when ``post_invocation_result`` (or ``post_invocation_error``) returns, the caller has it.
awslambdaric has no public hook there; we wrap those two methods of ``LambdaRuntimeClient``
once, the first time something is deferred. Used by the health guard's recycle (the exit,
always last) and by ``reused_connection(release_above=...)`` (the server sample).

If the post raises (the response was not delivered), the deferred work of that invocation
is dropped, not run: the exception goes on into awslambdaric, which ends the process with
it, and what is still open is closed at exit as without us. Each piece of work runs
exception-safe: an exception is logged by type name only and never reaches awslambdaric.

Only the single-request client is wrapped: in multi-concurrent mode each worker posts with
``LambdaMultiConcurrentRuntimeClient``, so nothing is deferred there.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

CLIENT_MODULE = "awslambdaric.lambda_runtime_client"
POST_METHODS = ("post_invocation_result", "post_invocation_error")

_pending: list[Callable[[], object]] = []  # after the next post, in order, then dropped
_last: list[Callable[[], object]] = []  # after every post, after _pending (the recycle exit)


def client_class() -> Any:
    """awslambdaric's ``LambdaRuntimeClient`` if it is loaded, else None.

    Looked up in ``sys.modules``, never imported: an installed but idle awslambdaric would
    never post, and work deferred to it would never run.
    """
    module = sys.modules.get(CLIENT_MODULE)
    cls = getattr(module, "LambdaRuntimeClient", None)
    if cls is None or not all(callable(getattr(cls, name, None)) for name in POST_METHODS):
        return None
    return cls


def posting_client() -> Any:
    """The class whose post ends this process's invocations, or None (no Runtime API, a
    test process that merely imported awslambdaric, or multi-concurrent workers)."""
    if not os.environ.get("AWS_LAMBDA_RUNTIME_API"):
        return None
    if os.environ.get("AWS_LAMBDA_MAX_CONCURRENCY") is not None:
        return None  # awslambdaric's own test: the workers post through another class
    return client_class()


def defer(hook: Callable[[], object]) -> bool:
    """Run ``hook()`` once after the next response is posted. False (nothing scheduled)
    when awslambdaric is not what runs us: the caller then does the work now. A hook
    already pending is not added twice."""
    cls = posting_client()
    if cls is None:
        return False
    install(cls)
    if hook not in _pending:
        _pending.append(hook)
    return True


def run_last(hook: Callable[[], object]) -> None:
    """Run ``hook()`` after every post, once the deferred work has run (idempotent)."""
    if hook not in _last:
        _last.append(hook)


def pending() -> int:
    return len(_pending)


def install(cls: Any) -> None:
    """Wrap the post methods of ``cls`` (idempotent)."""
    for name in POST_METHODS:
        original = getattr(cls, name)
        if getattr(original, "__lambda_conn_hook__", False):
            continue
        setattr(cls, name, _after_post(original))


def _after_post(original: Any) -> Any:
    import functools

    @functools.wraps(original)
    def post(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            result = original(self, *args, **kwargs)
        except BaseException:
            _pending.clear()  # not delivered: this invocation's work is dropped
            raise
        _run_after_post()
        return result

    post.__lambda_conn_hook__ = True  # type: ignore[attr-defined]
    return post


def _run_after_post() -> None:
    hooks = _pending[:]
    _pending.clear()
    for hook in [*hooks, *_last]:
        _run_safely(hook)


def _run_safely(hook: Callable[[], object]) -> None:
    try:
        hook()
    except Exception as exc:  # never into awslambdaric; BaseException (an exit) goes on
        from lambda_conn._log import WARNING, log_event

        log_event(
            WARNING,
            "after_response_hook_failed",
            hook=getattr(hook, "__qualname__", type(hook).__name__),
            error=type(exc).__name__,
        )
