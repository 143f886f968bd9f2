"""Exit the runtime process only once awslambdaric has posted the response.

Exiting inside the handler instead (SystemExit) would kill the process before any response
is posted, failing that request. The post is hooked by ``lambda_conn._after_response``;
the exit is its last step, after any work deferred to after the response (a reused
connection's release), since nothing runs after it.

Only the standard client's post exits: in multi-concurrent mode the workers post with
``LambdaMultiConcurrentRuntimeClient``, and awslambdaric never replaces a worker that
exits, so the guard only reports there. That class is wrapped too in those workers (work
deferred to after the response, such as a reused connection's release, runs there), but
``_after_response`` never runs the exit after its post, and ``arm`` refuses in that mode.
"""

from __future__ import annotations

from lambda_conn import _after_response
from lambda_conn._after_response import CLIENT_MODULE, POST_METHODS, client_class
from lambda_conn._guard import ending

__all__ = [
    "CLIENT_MODULE",
    "POST_METHODS",
    "arm",
    "available",
    "client_class",
    "disarm",
    "install",
    "is_armed",
]

CLOSE_DEADLINE_S = 1.0  # billed, but the caller no longer waits

_armed = False


def available() -> bool:
    return _exiting_client() is not None


def is_armed() -> bool:
    return _armed


def arm() -> bool:
    """Exit after the next response (or error) is posted. False if we cannot hook the post."""
    global _armed
    cls = _exiting_client()
    if cls is None:
        return False
    install(cls)
    _armed = True
    return True


def disarm() -> None:
    global _armed
    _armed = False


def install(cls: object) -> None:
    """Hook the post methods of ``cls`` and exit there when armed (idempotent)."""
    _after_response.install(cls)
    _after_response.run_last(_exit_if_armed)


def _exiting_client() -> object:
    """The class whose post may end the process: the standard client, never in
    multi-concurrent mode (where it is loaded but the workers post with another)."""
    return None if _after_response.multi_concurrent() else client_class()


def _exit_if_armed() -> None:
    if _armed:
        ending.end_process(0, CLOSE_DEADLINE_S)
