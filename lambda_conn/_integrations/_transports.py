"""Closing an asyncio transport without its event loop (a helper, not an integration).

After ``asyncio.run()`` has returned, a client's transports belong to a closed loop: their
own ``close()`` schedules the socket's close on that loop and fails, and the socket stays
open until the garbage collector finds it (with a "loop is closed" ResourceWarning).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def close_transport(transport: Any) -> None:
    """Close ``transport`` now: through its loop if that still runs, else its socket."""
    if transport is None:
        return
    loop = getattr(transport, "_loop", None)
    if loop is None or not loop.is_closed():
        transport.close()
        return
    sock = getattr(transport, "_sock", None)
    if sock is not None:
        sock.close()
        transport._sock = None  # its finalizer would warn of an unclosed transport
    try:  # noqa: SIM105  (contextlib: one more import)
        transport.close()  # marks it closing (so a StreamWriter's finalizer stays quiet)
    except RuntimeError:  # "Event loop is closed": the socket is closed already
        pass
