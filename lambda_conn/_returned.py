"""A returned object that still needs its connection keeps it.

A function decorated with ``@managed_connection`` may return something that reads from a
connection its scope opened: a streamed ``requests``/urllib3/httpx response, an unbuffered
PyMySQL cursor, a streamed SQLAlchemy result. Closing that connection with the scope would
cut the object under its caller (requests then hands back status 200 and an empty body), so
the scope hands the connection over to the object instead. The connection is closed when
the caller consumes or closes the object, when the object is dropped, at the end of an
enclosing scope (the decorated handler that called the function), or, for an object returned
by an outermost scope (the Lambda entry point), when the next invocation starts in the same
thread, whichever comes first.

Only the returned object itself and the items of a returned tuple are looked at. Anything
else that still reads from a connection the scope closes raises ``ClosedByScopeError``
(see the integrations' ``cut`` helpers): never a silently short body.
"""

from __future__ import annotations

import threading

from lambda_conn import _scope  # partly initialised here: it imports this module first
from lambda_conn._kinds import Kind

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from lambda_conn._scope import Scope

    #: What a probe returns: the object whose life bounds the hand-over (its "anchor"), and
    #: what makes the hold once the scope is known (None: the scope does not own it).
    Need = tuple[object, Callable[[Scope], "Hold | None"]]
    Probe = Callable[[Any], "Need | None"]

# Classes whose instances may still need a connection, named by where they are defined so
# that nothing here imports a client; the probe module is imported on the first match.
_LAZY_CLASSES: dict[tuple[str, str], str] = {
    ("requests.models", "Response"): "_returned_http:requests_response",
    ("urllib3.response", "HTTPResponse"): "_returned_http:urllib3_response",
    ("httpx", "Response"): "_returned_http:httpx_response",  # httpx renames its modules
    ("pymysql.cursors", "SSCursor"): "_returned_db:pymysql_cursor",
    ("sqlalchemy.engine.cursor", "CursorResult"): "_returned_db:sqlalchemy_result",
    ("sqlalchemy.engine.result", "FilterResult"): "_returned_db:sqlalchemy_filter_result",
}
_probes: dict[type, Probe | None] = {}  # per class: its probe, or None (needs nothing)
_held: dict[int, Hold] = {}  # id(anchor) -> its hold, while the anchor is alive
pending: dict[int, list[Hold]] = {}  # thread id -> holds an outermost scope handed out
_lock = threading.Lock()


class Hold:
    """One connection handed over to a returned object; :meth:`release` closes it."""

    __slots__ = ("_close", "_is_open", "_key", "_thread", "name", "remote")

    def __init__(
        self,
        name: str,
        close: Callable[[bool], None],
        is_open: Callable[[], bool],
        remote: list[str],
    ) -> None:
        self.name = name
        self.remote = remote
        self._close: Callable[[bool], None] | None = close
        self._is_open = is_open
        self._key = 0
        self._thread: int | None = None  # set while pending in an outermost scope's thread

    def __repr__(self) -> str:
        return f"<lambda_conn hold for a returned {self.name}>"

    def is_open(self) -> bool:
        return self._close is not None and self._is_open()

    def release(self, cut: bool = True) -> None:
        """Close the connection (idempotent; never raises: a failure is logged).

        ``cut``: the object may still be read, so a read must raise rather than come back
        short; False once it is consumed, closed or dropped."""
        close, self._close = self._close, None
        if close is None:
            return
        with _lock:
            if _held.get(self._key) is self:
                del _held[self._key]
            self._unpend()
        try:
            close(cut)
        except Exception as exc:
            _scope._close_failed(HELD, exc)

    def _unpend(self) -> None:
        thread, self._thread = self._thread, None
        holds = pending.get(thread) if thread is not None else None
        if holds is not None:
            holds.remove(self)
            if not holds:
                del pending[thread]  # type: ignore[arg-type]


HELD = Kind(
    "returned object",
    "returned",
    close=lambda hold: hold.release(),
    is_open=lambda hold: hold.is_open(),
    remote=lambda hold: hold.remote,
)


def hand_over(scope: Scope, result: object) -> None:
    """The returned-value step of a scope's exit, run before it closes (its parent, if any,
    is current again): what ``result`` still needs is not closed now but handed over."""
    cls = type(result)
    probe = _probes[cls] if cls in _probes else _resolve(cls)
    if probe is not None:
        _hand_over_one(scope, probe, result)
    elif cls is tuple:
        for item in result:  # type: ignore[attr-defined]
            cls = type(item)
            probe = _probes[cls] if cls in _probes else _resolve(cls)
            if probe is not None:
                _hand_over_one(scope, probe, item)


def _resolve(cls: type) -> Probe | None:
    probe: Probe | None = None
    for base in cls.__mro__:
        target = _LAZY_CLASSES.get((base.__module__, base.__qualname__))
        if target is not None:
            import importlib

            module, _, name = target.partition(":")
            probe = getattr(importlib.import_module(f"lambda_conn._integrations.{module}"), name)
            break
    _probes[cls] = probe
    return probe


def _hand_over_one(scope: Scope, probe: Probe, obj: object) -> None:
    try:
        need = probe(obj)
        if need is None:
            return  # read in full already, or never needed a connection
        anchor, make = need
        hold = _held.get(id(anchor))
        if hold is not None:  # handed over by an inner scope: this one passes it on
            scope.forget(hold)
        else:
            hold = make(scope)
            if hold is None:
                return  # not this scope's connection: it stays where it is
            import weakref

            hold._key = id(anchor)
            _held[hold._key] = hold
            weakref.finalize(anchor, hold.release, False)
    except Exception as exc:  # an unknown client version: close as before, reported
        from lambda_conn._log import WARNING, log_event

        log_event(WARNING, "hand_over_failed", type=type(obj).__qualname__, error=repr(exc))
        return
    parent = _scope._current.get()
    if parent is not None and not parent.closed:
        parent.register(hold, HELD)
    else:
        with _lock:
            hold._thread = threading.get_ident()
            pending.setdefault(hold._thread, []).append(hold)


def release_pending() -> None:
    """When an outermost scope starts: close what the previous invocations in this thread
    returned and nobody has read (the Lambda entry point's return value, once serialized,
    is never read again)."""
    with _lock:
        holds = list(pending.get(threading.get_ident(), ()))
    for hold in holds:
        hold.release()


_subclasses: dict[tuple[type, str], type] = {}


def subclass(cls: type, role: str, make: Callable[[type], dict[str, Any]]) -> type:
    """``cls`` with the methods ``make(cls)`` returns, made once per class and role: an
    object's class is swapped for it, which changes no other instance of ``cls``."""
    made = _subclasses.get((cls, role))
    if made is None:
        namespace = make(cls)
        if "__slots__" in cls.__dict__:
            namespace["__slots__"] = ()  # same layout, so ``__class__`` can be assigned
        made = type(cls.__name__, (cls,), namespace)
        made.__module__, made.__qualname__ = cls.__module__, cls.__qualname__
        _subclasses[cls, role] = made
    return made


def tracked(scope: Scope) -> list[Any]:
    """The objects ``scope`` will close (for a probe looking for a connection's owner)."""
    return [obj for obj, _ in scope._resources.values()]
