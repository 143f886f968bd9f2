"""An ``async def`` handler given straight to awslambdaric: run it, on one event loop.

awslambdaric calls the handler synchronously and marshals what it returns as JSON, so a
coroutine fails every invocation with ``Runtime.MarshalError``. Just before it marshals,
a coroutine that lambda_conn's own async wrapper returned is run to completion on one
event loop kept for the life of the process (module-level async clients and tasks keep
their loop between invocations, as they would under ``asyncio.Runner``). Its exception is
the invocation's error, as for a sync handler. awslambdaric is looked up in
``sys.modules``, never imported, and patched only once an async handler is decorated.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import CodeType
    from typing import Any

MARSHALLER_MODULE = "awslambdaric.lambda_runtime_marshaller"

_ours: set[CodeType] = set()  # code of the coroutines our wrappers return
_loop: Any = None


def run_coroutines_of(code: CodeType) -> bool:
    """Let awslambdaric run coroutines of ``code``. True if awslambdaric is patched."""
    _ours.add(code)
    module = sys.modules.get(MARSHALLER_MODULE)
    marshaller = getattr(module, "LambdaMarshaller", None)
    original = getattr(marshaller, "marshal_response", None)
    if original is None:
        return False  # not awslambdaric, or a version that marshals elsewhere
    if getattr(original, "lambda_conn_runs_coroutines", False):
        return True

    def marshal_response(self: Any, response: Any) -> Any:
        if getattr(response, "cr_code", None) in _ours:
            response = run(response)
        return original(self, response)

    marshal_response.lambda_conn_runs_coroutines = True  # type: ignore[attr-defined]
    marshal_response.__wrapped__ = original  # type: ignore[attr-defined]
    marshaller.marshal_response = marshal_response  # type: ignore[union-attr]
    return True


def run(coro: Any) -> Any:
    """Run ``coro`` to completion on this process's loop (made on first use)."""
    global _loop
    import asyncio

    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
        asyncio.set_event_loop(_loop)
    return _loop.run_until_complete(coro)
