"""The socket under an asyncio client's transport, for closing it outside its event loop.

A sync handler that runs ``asyncio.run(main())`` leaves the async clients ``main`` kept
behind a closed loop: their transports can no longer close (``close()``/``abort()`` only
schedule the socket's close with ``call_soon``, which raises on a closed loop), so the
descriptor and the server session stay until garbage collection. Outside a running loop,
the scope closes the socket itself once the client has said goodbye.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def raw_socket(transport: Any) -> Any:
    """The real socket object of ``transport`` (also under TLS), or None."""
    if transport is None:
        return None
    wrapper = transport.get_extra_info("socket")  # asyncio.TransportSocket
    return getattr(wrapper, "_sock", wrapper)


def loop_usable(loop: Any) -> bool:
    """Whether a client bound to ``loop`` can serve the code asking: its loop is not closed
    (a sync handler's ``asyncio.run()`` closes its loop when it returns, and the next one
    makes a new loop), and is the loop running here, if one is. None: not bound yet."""
    if loop is None:
        return True
    if loop.is_closed():
        return False
    import asyncio  # loaded: the client is an asyncio one

    running = asyncio._get_running_loop()
    return running is None or running is loop


def own_loop_usable(client: Any) -> bool:
    """``alive=`` of a pool that replaces dead connections itself, but only on the loop it
    was made on (``client._loop``): see :func:`loop_usable`."""
    return loop_usable(client._loop)


def socket_open(sock: Any) -> bool:
    try:
        return sock is not None and sock.fileno() >= 0
    except (OSError, ValueError):
        return False


def send_now(transport: Any, data: bytes) -> None:
    """Write ``data`` at once: with nothing buffered, a transport sends it synchronously,
    even when its loop is not running. Best effort: the socket may be gone already."""
    import contextlib  # here: integrations load when decorating, close paths later

    with contextlib.suppress(Exception):
        if transport is not None and not transport.is_closing():
            transport.write(data)


def close_outside_loop(transport: Any, sock: Any, loop: Any) -> None:
    """After ``transport`` was told to close, close its socket now unless ``loop`` is
    running (then the transport's own scheduled close does it).

    A stopped loop runs the transport's scheduled close when it next runs; a closed one
    never will, so the transport is finished here as the loop would have (the protocol
    hears ``connection_lost``; no "unclosed transport" warning when it is collected).
    """
    if loop.is_running():
        return
    if loop.is_closed():
        selector_transport = getattr(getattr(transport, "_ssl_protocol", None), "_transport", None)
        for candidate in (transport, selector_transport):
            finish = getattr(candidate, "_call_connection_lost", None)
            if finish is not None and getattr(candidate, "_sock", None) is not None:
                import contextlib

                with contextlib.suppress(Exception):  # the protocol's cleanup; sock below
                    finish(None)
    if socket_open(sock):
        sock.close()
