"""Exit the runtime process only once awslambdaric has posted the response.

Exiting inside the handler instead (SystemExit) would kill the process before any response
is posted, failing that request. The post is hooked by ``lambda_conn._after_response``;
the exit is its last step, after any work deferred to after the response (a reused
connection's release), since nothing runs after it.

Only the single-request client is wrapped: in multi-concurrent mode the workers run
``LambdaMultiConcurrentRuntimeClient``, which awslambdaric never replaces when one exits,
and the guard only reports there.
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
    return client_class() is not None


def is_armed() -> bool:
    return _armed


def arm() -> bool:
    """Exit after the next response (or error) is posted. False if we cannot hook the post."""
    global _armed
    cls = client_class()
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


def _exit_if_armed() -> None:
    if _armed:
        ending.end_process(0, CLOSE_DEADLINE_S)
