"""Work that runs once awslambdaric has posted the response: the caller no longer waits.

The platform writes the payload to the caller before it answers the runtime's POST, so
when ``post_invocation_result`` (or ``post_invocation_error``) returns, the caller has it.
awslambdaric has no public hook there; we wrap those two methods of the client class that
posts in this process's mode, once, the first time something is deferred. Used by the
health guard's recycle (the exit, always last) and by ``reused_connection(release_above=...)``
(the server sample).

Which class posts: ``LambdaRuntimeClient`` in the standard mode, one process serving one
invocation at a time. In multi-concurrent mode (Lambda Managed Instances, where Lambda sets
``AWS_LAMBDA_MAX_CONCURRENCY``) awslambdaric forks that many worker processes, and each
runs the same loop, one invocation at a time, posting with
``LambdaMultiConcurrentRuntimeClient``: that class is wrapped there, so a worker runs its
deferred work after its own post, before it asks for its next event. The state is per
process: a worker has its own ``_pending``, and a fork empties the child's (what the parent
deferred is for the parent's post, which the child never makes). A class wrapped before the
fork (a handler imported in the parent) stays wrapped in every worker; one wrapped in a
worker is wrapped in that worker only. Both are the same wrapper, installed once per class.

If the post raises (the response was not delivered), the deferred work of that invocation
is dropped, not run: the exception goes on into awslambdaric, which ends the process with
it, and what is still open is closed at exit as without us. A multi-concurrent worker's
failed post does not raise: ``LambdaMultiConcurrentRuntimeClient.handle_exception`` logs
it and returns, and the worker goes on to its next event. There the deferred work runs as
after any post, and we do not try to tell the two apart: the worker lives on, so the work
still has a purpose (the release sample decides whether this worker keeps its session
while it waits, whatever became of the response), and it is harmless (a round trip before
the next ``/next``, which nobody was waiting on); dropping it would only move the sample
to the end of the next invocation, before that one's response.

The work run last on every post (``run_last``: the recycle's exit) runs only after the
standard client's post, never after a multi-concurrent worker's: awslambdaric does not
replace a worker that exits, so the health guard only reports there
(``lambda_conn/_guard/recycle.py``). Each piece of work runs exception-safe: an exception
is logged by type name only and never reaches awslambdaric.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

CLIENT_MODULE = "awslambdaric.lambda_runtime_client"
SINGLE_CLIENT = "LambdaRuntimeClient"  # the standard mode
MULTI_CLIENT = "LambdaMultiConcurrentRuntimeClient"  # each multi-concurrent worker
POST_METHODS = ("post_invocation_result", "post_invocation_error")

_pending: list[Callable[[], object]] = []  # after the next post, in order, then dropped
_last: list[Callable[[], object]] = []  # after every standard post, after _pending (the exit)

# The parent's pending work waits for the parent's post; a forked worker never makes it.
os.register_at_fork(after_in_child=_pending.clear)


def multi_concurrent() -> bool:
    """awslambdaric's own test for multi-concurrent mode: ``AWS_LAMBDA_MAX_CONCURRENCY``
    set at all (``LambdaConfigProvider.is_multi_concurrent``)."""
    return os.environ.get("AWS_LAMBDA_MAX_CONCURRENCY") is not None


def client_class(name: str = SINGLE_CLIENT) -> Any:
    """awslambdaric's client class ``name`` if its module is loaded, else None.

    Looked up in ``sys.modules``, never imported: an installed but idle awslambdaric would
    never post, and work deferred to it would never run.
    """
    module = sys.modules.get(CLIENT_MODULE)
    cls = getattr(module, name, None)
    if cls is None or not all(callable(getattr(cls, m, None)) for m in POST_METHODS):
        return None
    return cls


def posting_client() -> Any:
    """The class whose post ends this process's invocations, or None (no Runtime API, or
    a test process that merely imported awslambdaric): ``LambdaMultiConcurrentRuntimeClient``
    in multi-concurrent mode, ``LambdaRuntimeClient`` otherwise. Only that one: the other
    is loaded too but never posts here, and work deferred to it would never run."""
    if not os.environ.get("AWS_LAMBDA_RUNTIME_API"):
        return None
    return client_class(MULTI_CLIENT if multi_concurrent() else SINGLE_CLIENT)


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
    """Run ``hook()`` after every post of the standard client, once the deferred work has
    run (idempotent); never after a multi-concurrent worker's post."""
    if hook not in _last:
        _last.append(hook)


def pending() -> int:
    return len(_pending)


def install(cls: Any) -> None:
    """Wrap the post methods of ``cls`` (idempotent). The ``run_last`` work runs after
    them unless ``cls`` is the multi-concurrent workers' class."""
    last = not is_multi_concurrent_client(cls)
    for name in POST_METHODS:
        original = getattr(cls, name)
        if getattr(original, "__lambda_conn_hook__", False):
            continue
        setattr(cls, name, _after_post(original, last))


def is_multi_concurrent_client(cls: Any) -> bool:
    """``cls`` is (or derives from) awslambdaric's ``LambdaMultiConcurrentRuntimeClient``."""
    multi = getattr(sys.modules.get(CLIENT_MODULE), MULTI_CLIENT, None)
    return isinstance(cls, type) and isinstance(multi, type) and issubclass(cls, multi)


def _after_post(original: Any, last: bool) -> Any:
    import functools

    @functools.wraps(original)
    def post(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            result = original(self, *args, **kwargs)
        except BaseException:
            _pending.clear()  # not delivered: this invocation's work is dropped
            raise
        # returned: delivered, or (multi-concurrent) failed and logged by awslambdaric
        _run_after_post(last)
        return result

    post.__lambda_conn_hook__ = True  # type: ignore[attr-defined]
    return post


def _run_after_post(last: bool) -> None:
    hooks = _pending[:]
    _pending.clear()
    for hook in [*hooks, *(_last if last else ())]:
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
