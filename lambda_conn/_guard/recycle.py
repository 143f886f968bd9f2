"""Exit the runtime process only once awslambdaric has posted the response.

The platform writes the payload to the caller before it answers the runtime's POST, so
when ``post_invocation_result`` (or ``post_invocation_error``) returns, the caller has it.
awslambdaric has no public hook there; we wrap those two methods of ``LambdaRuntimeClient``
once, the first time a recycle is armed. Exiting inside the handler instead (SystemExit)
would kill the process before any response is posted, failing that request.

Only the single-request client is wrapped: in multi-concurrent mode the workers run
``LambdaMultiConcurrentRuntimeClient``, which awslambdaric never replaces when one exits,
and the guard only reports there.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

from lambda_conn._guard import ending

CLIENT_MODULE = "awslambdaric.lambda_runtime_client"
POST_METHODS = ("post_invocation_result", "post_invocation_error")
CLOSE_DEADLINE_S = 1.0  # billed, but the caller no longer waits

_armed = False


def client_class() -> Any:
    """awslambdaric's ``LambdaRuntimeClient`` if awslambdaric is what runs us, else None.

    Looked up in ``sys.modules``, never imported: an installed but idle awslambdaric would
    never post, and a recycle armed on it would never happen.
    """
    module = sys.modules.get(CLIENT_MODULE)
    cls = getattr(module, "LambdaRuntimeClient", None)
    if cls is None or not all(callable(getattr(cls, name, None)) for name in POST_METHODS):
        return None
    return cls


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


def install(cls: Any) -> None:
    """Wrap the post methods of ``cls`` (idempotent)."""
    for name in POST_METHODS:
        original = getattr(cls, name)
        if getattr(original, "__lambda_conn_hook__", False):
            continue
        setattr(cls, name, _after_post(original))


def _after_post(original: Any) -> Any:
    @functools.wraps(original)
    def post(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)  # raises if the post failed: no exit then
        if _armed:
            ending.end_process(0, CLOSE_DEADLINE_S)
        return result

    post.__lambda_conn_hook__ = True  # type: ignore[attr-defined]
    return post
