"""``managed_connection``: one object that is a decorator, a scope and a closing context."""

from __future__ import annotations

import functools
from contextvars import ContextVar

from lambda_conn import _tracking
from lambda_conn._errors import ConfigurationError
from lambda_conn._kinds import is_closeable, is_registered_kind, kind_of
from lambda_conn._scope import LEAK_ACTIONS, Scope, _close_failed
from lambda_conn._shapes import is_coroutine_function, refuse_generators
from lambda_conn._stats import counters

TYPE_CHECKING = False
if not TYPE_CHECKING:  # no `typing` at run time: see _runtime_typing
    from lambda_conn._runtime_typing import Generic, TypeVar, overload
else:
    from collections.abc import Callable, Iterable
    from types import TracebackType
    from typing import Any, Generic, TypeVar, overload

F = TypeVar("F", bound="Callable[..., Any]")
C = TypeVar("C")

_open_blocks: ContextVar[tuple[tuple[Any, Scope], ...]] = ContextVar(
    "lambda_conn_open_blocks", default=()
)


def _parse_clients(clients: str | Iterable[str]) -> frozenset[str] | None:
    from lambda_conn._registry import parse_clients

    return parse_clients(clients)


def _parse_on_leak(on_leak: str) -> str:
    if on_leak not in LEAK_ACTIONS:
        raise ConfigurationError("on_leak", on_leak, " or ".join(map(repr, LEAK_ACTIONS)))
    return on_leak


def _parse_audit(audit_descriptors: bool | None) -> bool:
    if audit_descriptors is None:
        from lambda_conn._fd_audit import audit_from_env

        return audit_from_env()
    if not isinstance(audit_descriptors, bool):
        raise ConfigurationError("audit_descriptors", audit_descriptors, "True, False or None")
    return audit_descriptors


class ManagedConnection:
    """Closes what a handler opens. Use as ``@decorator``, ``with`` or ``async with``."""

    __slots__ = ("audit", "clients", "on_leak")

    def __init__(self, clients: frozenset[str] | None, on_leak: str, audit: bool = False) -> None:
        self.clients = clients
        self.on_leak = on_leak
        self.audit = audit

    def __repr__(self) -> str:
        clients = "all" if self.clients is None else sorted(self.clients)
        return (
            f"managed_connection(clients={clients!r}, on_leak={self.on_leak!r}, "
            f"audit_descriptors={self.audit!r})"
        )

    def __call__(self, handler: F) -> F:
        if not callable(handler):
            raise TypeError(
                f"@managed_connection decorates a function, got {type(handler).__name__}"
            )
        refuse_generators(handler, "@managed_connection")
        _tracking.install()
        from lambda_conn._health import guard_for_handler

        guard = guard_for_handler()
        from lambda_conn._budget import log_at_init

        log_at_init()  # the connection budget, when configured (nothing per invocation)
        clients, on_leak, audit = self.clients, self.on_leak, self.audit
        # Without a guard or an audit, the hook after each invocation only counts it: one
        # function for every call, not an object built per call.
        counted = guard is None and not audit
        if audit:
            from lambda_conn._fd_audit import safe_snapshot as snapshot

        if is_coroutine_function(handler):

            @functools.wraps(handler)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                after = (
                    _count_invocation
                    if counted
                    else _AfterInvocation(guard, args, snapshot() if audit else None)
                )
                return await Scope(clients, on_leak, after).arun(handler, args, kwargs)

            # Given straight to awslambdaric, which cannot await, it runs all the same.
            from lambda_conn._entry import run_coroutines_of

            run_coroutines_of(async_wrapper.__code__)  # type: ignore[attr-defined]
            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(handler)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            after = (
                _count_invocation
                if counted
                else _AfterInvocation(guard, args, snapshot() if audit else None)
            )
            return Scope(clients, on_leak, after).run(handler, args, kwargs)

        return wrapper  # type: ignore[return-value]

    # A scope without a decorator: `with managed_connection() as scope:`.
    # The open scopes live in a ContextVar, not on this object, so one object can serve
    # overlapping `with` blocks in several tasks or threads.
    def __enter__(self) -> Scope:
        _tracking.install()
        scope = Scope(self.clients, self.on_leak).enter()
        _open_blocks.set((*_open_blocks.get(), (self, scope)))
        return scope

    def _pop(self) -> Scope:
        blocks = _open_blocks.get()
        for index in range(len(blocks) - 1, -1, -1):
            owner, scope = blocks[index]
            if owner is self:
                _open_blocks.set(blocks[:index] + blocks[index + 1 :])
                return scope
        raise RuntimeError("managed_connection: __exit__ without a matching __enter__")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._pop().exit(failed=exc_type is not None)

    async def __aenter__(self) -> Scope:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._pop().aexit(failed=exc_type is not None)


def _count_invocation(scope: Scope) -> None:
    """The hook after a decorated handler's scope closed, with no guard and no audit."""
    if scope._root is None:  # the outermost: the invocation itself
        counters.invocations += 1


class _AfterInvocation:
    """The hook after a decorated handler's scope closed, with a guard or an audit: the
    descriptor audit, then, after the outermost invocation only, the counter and the
    health guard."""

    __slots__ = ("args", "before", "guard")

    def __init__(self, guard: Any, args: tuple[Any, ...], before: frozenset[int] | None) -> None:
        self.before = before  # the descriptors open before the handler (audit only)
        self.guard = guard
        self.args = args

    def __call__(self, scope: Scope) -> None:
        if self.before is not None:
            _audit(self.before)
        if scope._root is None:  # the outermost: the invocation itself
            counters.invocations += 1
            if self.guard is not None:
                self.guard.after_invocation(self.args)


def _audit(before: frozenset[int]) -> None:
    from lambda_conn._fd_audit import left_open

    try:
        leaks = left_open(before)
    except Exception as exc:  # an audit must never fail a request
        from lambda_conn._log import WARNING, log_event

        log_event(WARNING, "descriptor_audit_failed", error=repr(exc))
        return
    if leaks:
        from lambda_conn._log import WARNING, log_event

        counters.leaked_descriptors += len(leaks)
        log_event(WARNING, "descriptors_left_open", count=len(leaks), descriptors=leaks)


class Closing(Generic[C]):
    """``with managed_connection(conn) as conn:`` closes that one object on exit."""

    __slots__ = ("obj",)

    def __init__(self, obj: C) -> None:
        self.obj = obj

    def __repr__(self) -> str:
        return f"<lambda_conn closing {type(self.obj).__qualname__}>"

    def __enter__(self) -> C:
        # Refused here, not in __exit__, where the error would replace the body's own.
        if kind_of(self.obj).close is None:
            raise TypeError(
                f"{type(self.obj).__qualname__} closes asynchronously: use "
                "`async with managed_connection(client)`"
            )
        return self.obj

    def __exit__(self, *exc_info: object) -> None:
        kind = kind_of(self.obj)
        if kind.close is None:
            return  # refused by __enter__
        try:
            kind.close(self.obj)
        except Exception as exc:  # never replaces the body's result or exception
            _close_failed(kind, exc)

    async def __aenter__(self) -> C:
        return self.obj

    async def __aexit__(self, *exc_info: object) -> None:
        kind = kind_of(self.obj)
        try:
            if kind.aclose is not None:
                await kind.aclose(self.obj)
            elif kind.close is not None:
                kind.close(self.obj)
        except Exception as exc:
            _close_failed(kind, exc)


@overload
def managed_connection(
    target: None = None,
    /,
    *,
    clients: str | Iterable[str] = "all",
    on_leak: str = "report",
    audit_descriptors: bool | None = None,
) -> ManagedConnection: ...
@overload
def managed_connection(  # type: ignore[overload-overlap]
    target: F,
    /,
    *,
    clients: str | Iterable[str] = "all",
    on_leak: str = "report",
    audit_descriptors: bool | None = None,
) -> F: ...
@overload
def managed_connection(target: C, /) -> Closing[C]: ...
def managed_connection(
    target: Any = None,
    /,
    *,
    clients: str | Iterable[str] = "all",
    on_leak: str = "report",
    audit_descriptors: bool | None = None,
) -> Any:
    """Close every connection a handler opens, when it returns or raises.

    - ``@managed_connection`` or ``@managed_connection(clients=..., on_leak=...)`` on a sync
      or async handler (or method);
    - ``with managed_connection() as scope:`` / ``async with``: the same scope for a block;
    - ``with managed_connection(conn) as conn:`` closes that one object on exit.

    ``clients`` limits automatic tracking ("all", or names from ``CLIENTS``, plugins
    included); ``on_leak``
    says what to do when something stays open after cleanup: "report" (a JSON log line and
    a counter), "raise" (``LeakError`` after a successful handler; for tests) or "ignore".
    ``audit_descriptors`` (default: ``LAMBDA_CONN_AUDIT_DESCRIPTORS``) also reports every
    descriptor the invocation opened and left open, tracked or not (~50 us a call).
    """
    options = ManagedConnection(
        _parse_clients(clients), _parse_on_leak(on_leak), _parse_audit(audit_descriptors)
    )
    if target is None:
        # Tracking is installed here, where it costs milliseconds (the integrations, the
        # plugin scan, wrapt and the patches of clients already imported): for an object
        # built at module level that is Init, not its first `with` block's invocation.
        _tracking.install()
        return options
    if isinstance(target, (str, bytes, int, float, list, tuple, set, frozenset, dict)):
        from lambda_conn._redact import shown
        from lambda_conn._registry import client_names

        known = isinstance(target, str) and target in client_names()
        given = repr(target) if known else shown(target)
        raise TypeError(
            f"managed_connection() takes its options as keywords, got {given}: did you "
            f"mean managed_connection(clients={given})?"
        )
    _tracking.install()  # the clients' own close rules, before anything looks a kind up
    if callable(target) and not is_registered_kind(target):
        return options(target)  # a handler, even a handler object that has close()
    if is_closeable(target):
        if clients != "all" or on_leak != "report" or audit_descriptors is not None:
            raise TypeError(
                "managed_connection(conn) closes one object and takes no options; "
                "options belong to @managed_connection(...) on a handler"
            )
        return Closing(target)
    if callable(target):
        return options(target)
    raise TypeError(
        f"managed_connection() takes a handler to decorate or an object with close(), "
        f"aclose() or dispose(); got {type(target).__qualname__}"
    )
