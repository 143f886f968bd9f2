"""How to close, probe and describe each kind of connection object.

Integrations register a :class:`Kind` for the classes they know; anything else falls back to
its own ``aclose()`` / ``close()`` / ``dispose()``.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from typing import Any


#: What a built-in integration's close returns once it has seen to it that nothing of the
#: object is left open (it closed every socket, and raised if one failed): the scope then
#: skips the ``is_open`` leak check, which would walk what was just closed. Private: a
#: plugin's close returns None and is always checked, as is one that raised.
SHUT = object()


def _never_open(obj: Any) -> bool:
    return False


def _no_remote(obj: Any) -> list[str]:
    return []


class Kind:
    """Closing rules for one family of objects.

    ``close`` must be idempotent (closing something closed is not an error); ``aclose`` is
    used instead inside async scopes when present. ``is_open`` is asked after closing, so a
    leak is reported only for what really stayed open. ``alive`` is the cheap probe run on a
    connection reused across invocations (after a thaw the server may have dropped it):
    no round trip, just whether its socket is still usable. :func:`reconnects` declares a
    client that replaces dead connections by itself (a pool). Left out, ``alive`` is
    ``is_open`` when that is given, else :func:`reconnects`: a Kind with neither is
    trusted when reused, so every built-in Kind declares one (tests/test_registry.py).
    """

    __slots__ = ("aclose", "alive", "client", "close", "is_open", "name", "remote")

    def __init__(
        self,
        name: str,
        client: str,
        *,
        close: Callable[[Any], object] | None,
        aclose: Callable[[Any], Awaitable[object]] | None = None,
        is_open: Callable[[Any], bool] = _never_open,
        remote: Callable[[Any], list[str]] = _no_remote,
        alive: Callable[[Any], bool] | None = None,
    ) -> None:
        self.name = name
        self.client = client
        self.close = close
        self.aclose = aclose
        self.is_open = is_open
        self.remote = remote
        if alive is None:  # no probe of its own: open means usable; unknowable means trusted
            alive = is_open if is_open is not _never_open else reconnects
        self.alive = alive

    def __repr__(self) -> str:
        return f"Kind({self.name!r}, client={self.client!r})"


def reconnects(obj: Any) -> bool:
    """``alive=`` for clients that check and replace their connections themselves (pools)."""
    return True


_by_type: dict[type, Kind] = {}


def register_kind(cls: type, kind: Kind) -> None:
    _by_type[cls] = kind


def _generic_close(obj: Any) -> None:
    if getattr(obj, "closed", False) is True or getattr(obj, "is_closed", False) is True:
        return
    for name in ("close", "dispose"):
        method = getattr(obj, name, None)
        if callable(method):
            method()
            return
    raise TypeError(f"{type(obj).__qualname__} has no close() or dispose()")


async def _generic_aclose(obj: Any) -> None:
    if getattr(obj, "is_closed", False) is True or getattr(obj, "closed", False) is True:
        return
    method = getattr(obj, "aclose", None)
    if callable(method):
        await method()
    else:
        _generic_close(obj)


def _generic_is_open(obj: Any) -> bool:
    for name in ("closed", "is_closed"):
        value = getattr(obj, name, None)
        if isinstance(value, bool):
            return not value
    return False


_GENERIC = Kind("object", "custom", close=_generic_close, is_open=_generic_is_open)
_GENERIC_ASYNC = Kind(
    "object", "custom", close=None, aclose=_generic_aclose, is_open=_generic_is_open
)


def kind_of(obj: Any) -> Kind:
    """The closing rules for ``obj``: its registered kind, or the generic one."""
    by_type = _by_type
    if by_type:
        for cls in type(obj).__mro__:
            kind = by_type.get(cls)
            if kind is not None:
                return kind
    if (
        not callable(getattr(obj, "close", None))
        and not callable(getattr(obj, "dispose", None))
        and callable(getattr(obj, "aclose", None))
    ):
        return _GENERIC_ASYNC
    return _GENERIC


def registered_kind(obj: Any) -> Kind | None:
    """The kind an integration registered for ``obj``'s class, or None."""
    for cls in type(obj).__mro__:
        kind = _by_type.get(cls)
        if kind is not None:
            return kind
    return None


def is_registered_kind(obj: Any) -> bool:
    """Whether an integration knows ``obj``'s class (a connection, whatever else it is)."""
    return any(cls in _by_type for cls in type(obj).__mro__)


def is_closeable(obj: Any) -> bool:
    """Whether ``obj`` looks like a connection (as opposed to a handler to decorate)."""
    if is_registered_kind(obj):
        return True
    return any(callable(getattr(obj, name, None)) for name in ("close", "aclose", "dispose"))
