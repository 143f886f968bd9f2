"""The invocation scope: what was opened during one handler call, closed newest first.

Scopes live in a ContextVar, so they are isolated per thread and per asyncio task, and a
nested scope collects only what is opened while it is the innermost one.
"""

from __future__ import annotations

import itertools
from contextvars import ContextVar

from lambda_conn import _returned
from lambda_conn._errors import LambdaConnError, LeakError
from lambda_conn._kinds import SHUT, Kind, kind_of
from lambda_conn._stats import counters

TYPE_CHECKING = False
if not TYPE_CHECKING:  # no `typing` at run time: see _runtime_typing
    from lambda_conn._runtime_typing import TypeVar
else:
    from collections.abc import Awaitable, Callable
    from contextvars import Token
    from typing import Any, TypeVar

T = TypeVar("T")

_current: ContextVar[Scope | None] = ContextVar("lambda_conn_scope", default=None)
# Scopes entered and not yet left, in any thread or task: what SIGTERM closes. Left (not
# only closed) takes a scope out, so one handed to an awaitable never awaited is not held.
_entered: set[Scope] = set()
_serials = itertools.count(1)

LEAK_ACTIONS = ("report", "raise", "ignore")


class Scope:
    """Connections opened during one invocation (or one ``with managed_connection()`` block).

    The scope owns its flow: :meth:`run` / :meth:`arun` enter it, call the handler, and
    leave through :meth:`exit` / :meth:`aexit`, the one exit path: the returned value's
    step (:meth:`returned`), the close, then the ``after`` hook (for a decorated handler:
    descriptor audit, counters, health check).
    """

    __slots__ = (
        "_at_exit",
        "_late",
        "_resources",
        "_root",
        "_token",
        "after",
        "clients",
        "closed",
        "on_leak",
        "serial",
    )

    def __init__(
        self,
        clients: frozenset[str] | None = None,
        on_leak: str = "report",
        after: Callable[[Scope], None] | None = None,
    ) -> None:
        self._resources: dict[int, tuple[Any, Kind]] = {}
        self._token: Token[Scope | None] | None = None
        self.clients = clients
        self.on_leak = on_leak
        self.after = after
        # Closed: it takes nothing more. A thread or task that copied this scope's context
        # and outlives it must not have its connections kept alive here.
        self.closed = False
        self._late: set[tuple[str, tuple[str, ...]]] | None = None  # (kind, remote) reported
        # The invocation: the outermost open scope this one is nested in, or itself when
        # in_invocation() is false here (no open scope around it, or one whose root is
        # closed: the pytest plugin's). Per-invocation state of reused connections ends
        # with it, and a decorated handler whose scope is its own root is the invocation.
        # None when it is its own root: a scope that referred to itself would be a
        # reference cycle per invocation, freed only by the cyclic garbage collector.
        parent = _current.get()
        if parent is None or parent.closed or parent.root.closed:
            self._root: Scope | None = None
        else:
            self._root = parent.root
        self._at_exit: list[Callable[[bool], None]] | None = None
        # Unique for the life of the process, unlike id(): a mark left on a long-lived
        # object (a pool) never matches a later scope that reuses this one's memory.
        self.serial = next(_serials)

    @property
    def root(self) -> Scope:
        """The invocation this scope belongs to (itself when it is the outermost)."""
        root = self._root
        return self if root is None else root

    @root.setter
    def root(self, scope: Scope) -> None:
        self._root = None if scope is self else scope

    def __repr__(self) -> str:
        kinds = [kind.name for _, kind in self._resources.values()]
        return f"<lambda_conn.Scope tracking {len(kinds)} {kinds!r}>"

    # -- the flow: enter, run, exit ------------------------------------------------------

    def enter(self) -> Scope:
        """Make this the current scope of this thread or task (until :meth:`leave`)."""
        if self._root is None and _returned.pending:
            _returned.release_pending()  # what the previous invocation returned, unread
        self._token = _current.set(self)
        _entered.add(self)
        return self

    def leave(self) -> None:
        """Stop being the current scope, without closing (a WSGI body resumes it later)."""
        token, self._token = self._token, None
        if token is not None:
            _current.reset(token)
            _entered.discard(self)

    def returned(self, result: Any) -> Any:
        """The step that sees what the handler returned, before its connections close: a
        connection the result still reads from (a streamed response, an unbuffered cursor)
        is handed over to it rather than closed under it (lambda_conn._returned)."""
        if self._resources and result is not None:
            _returned.hand_over(self, result)
        return result

    def exit(self, result: Any = None, *, failed: bool = False) -> Any:
        """Leave, close everything, run the ``after`` hook; returns the handler's result."""
        self.leave()
        try:
            if self._resources or self._at_exit is not None:
                if not failed:
                    result = self.returned(result)
                self.close(handler_failed=failed)
            else:  # nothing to close: most invocations, spared the calls
                self.closed = True
        finally:
            if self.after is not None:
                self.after(self)
        return result

    async def aexit(self, result: Any = None, *, failed: bool = False) -> Any:
        """As :meth:`exit`, awaiting ``aclose()`` for async clients."""
        self.leave()
        try:
            if self._resources or self._at_exit is not None:
                if not failed:
                    result = self.returned(result)
                await self.aclose(handler_failed=failed)
            else:
                self.closed = True
        finally:
            if self.after is not None:
                self.after(self)
        return result

    def run(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        """``fn(*args, **kwargs)`` inside this scope, closed when it returns or raises.

        A sync ``fn`` that returns an awaitable (a sync wrapper around an ``async def``)
        hands the scope over: it closes when that awaitable completes, in the task that
        awaits it, so what the coroutine's body opens is covered too."""
        self.enter()
        try:
            result = fn(*args, **kwargs)
        except BaseException:
            self.exit(failed=True)
            raise
        if hasattr(result, "__await__"):
            self.leave()
            from lambda_conn._entry import run_coroutines_of

            run_coroutines_of(Scope._awaiting.__code__)  # given straight to awslambdaric
            return self._awaiting(result)  # type: ignore[return-value]
        if type(result) in _GENERATORS:
            _returned_generator(fn)
        return self.exit(result)  # type: ignore[no-any-return]

    async def _awaiting(self, awaitable: Awaitable[T]) -> T:
        """The rest of :meth:`run` once the handler returned an awaitable."""
        return await self.arun(_await, (awaitable,), {})

    async def arun(
        self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        """As :meth:`run` for a coroutine function."""
        self.enter()
        try:
            result = await fn(*args, **kwargs)
        except BaseException:
            await self.aexit(failed=True)
            raise
        return await self.aexit(result)  # type: ignore[no-any-return]

    # -- what it tracks --------------------------------------------------------------------

    def at_exit(self, hook: Callable[[bool], None]) -> bool:
        """Call ``hook(handler_failed)`` when this scope closes, before its connections are
        closed. False (and never called) if the scope has already closed."""
        if self.closed:
            return False
        if self._at_exit is None:
            self._at_exit = []
        self._at_exit.append(hook)
        return True

    def _run_at_exit(self, handler_failed: bool) -> None:
        hooks, self._at_exit = self._at_exit, None
        for hook in hooks or ():
            try:
                hook(handler_failed)
            except Exception as exc:  # a hook never fails the request
                from lambda_conn._log import WARNING, log_event

                log_event(WARNING, "scope_exit_hook_failed", error=type(exc).__name__)

    def tracks(self, client: str) -> bool:
        return self.clients is None or client in self.clients

    def register(self, obj: T, kind: Kind | None = None) -> T:
        """Close ``obj`` when this scope ends. Returns ``obj`` so it can wrap a constructor.

        A closed scope does not take it (nor keep it alive): the opening is reported once
        per kind and remote (``opened_after_scope_closed``) and counted in ``stats()``."""
        if kind is None:
            kind = kind_of(obj)
        if self.closed:
            self._opened_after_close(obj, kind)
        else:
            self._resources[id(obj)] = (obj, kind)
        return obj

    def _opened_after_close(self, obj: object, kind: Kind) -> None:
        counters.opened_after_scope_closed += 1
        key = (kind.name, tuple(_remote(obj, kind)))
        if self._late is None:
            self._late = set()
        elif key in self._late:
            return
        self._late.add(key)
        from lambda_conn._log import WARNING, log_event

        log_event(
            WARNING,
            "opened_after_scope_closed",
            kind=key[0],
            remote=list(key[1]),
            hint="opened from a context copied from a finished invocation (a thread or "
            "task that outlived it): not tracked; open it inside an invocation, or close it "
            "yourself",
        )

    def forget(self, obj: object) -> None:
        """Stop tracking ``obj`` (another owner, such as a pool, is responsible for it)."""
        self._resources.pop(id(obj), None)

    def __contains__(self, obj: object) -> bool:
        return id(obj) in self._resources

    def __len__(self) -> int:
        return len(self._resources)

    def close(self, *, handler_failed: bool = False) -> None:
        """Close everything, newest first. Never raises, except ``LeakError`` with
        ``on_leak="raise"`` after a handler that succeeded."""
        self.closed = True
        if self._at_exit is not None:
            self._run_at_exit(handler_failed)
        tracked = self._resources
        if not tracked:
            return
        self._resources = {}
        # Written out, not through helpers: every invocation that opened something runs
        # this, and a scope's close should cost little more than the clients' own closes
        # (measured in benchmarks/bench_core.py: one tracked object, the common case, is
        # not given a reverse iterator, and each attribute is read once).
        probe = None  # what the leak check asks is_open, once every close has run
        count = len(tracked)
        for item in tracked.values() if count == 1 else reversed(tracked.values()):
            kind = item[1]
            close = kind.close
            if close is not None:  # else async-only in a sync scope: reported if open
                try:
                    if close(item[0]) is SHUT:
                        continue  # the close saw to it that nothing of obj is open
                except Exception as exc:
                    _close_failed(kind, exc)
            if probe is None:
                probe = []
            probe.append(item)
        if probe is None:
            counters.closed += count
        else:
            self._leak_check(count, probe, handler_failed)

    async def aclose(self, *, handler_failed: bool = False) -> None:
        """As :meth:`close`, awaiting ``aclose()`` for async clients."""
        self.closed = True
        if self._at_exit is not None:
            self._run_at_exit(handler_failed)
        tracked = self._resources
        if not tracked:
            return
        self._resources = {}
        probe = None
        interrupted: BaseException | None = None
        for item in reversed(tracked.values()):
            obj, kind = item
            try:
                if kind.aclose is not None:
                    if await kind.aclose(obj) is SHUT:
                        continue
                elif kind.close is not None and kind.close(obj) is SHUT:
                    continue
            except Exception as exc:
                _close_failed(kind, exc)
            except BaseException as exc:  # cancelled mid-close: finish the rest first
                interrupted = interrupted or exc
            if probe is None:
                probe = []
            probe.append(item)
        if probe is None:
            counters.closed += len(tracked)
        else:
            self._leak_check(len(tracked), probe, handler_failed)
        if interrupted is not None and not handler_failed:
            raise interrupted

    def _close_at_shutdown(self) -> int:
        """Close what is open now, from another thread, as the process is about to end:
        no leak report (the handler is interrupted, not done). Returns how many."""
        self.closed = True
        tracked, self._resources = self._resources, {}
        for obj, kind in reversed(tracked.values()):
            if kind.close is None:
                continue  # async-only: its loop is not running here
            try:
                kind.close(obj)
            except Exception as exc:
                _close_failed(kind, exc)
        return len(tracked)

    def _leak_check(self, closed: int, probe: list[tuple[Any, Kind]], handler_failed: bool) -> None:
        """After every close has run: what of ``probe`` (each object whose close did not
        return ``SHUT``) is still open is reported and counted."""
        leaked = [(obj, kind) for obj, kind in probe if _still_open(obj, kind)]
        counters.closed += closed - len(leaked)
        if leaked:
            counters.leaked += len(leaked)
            self._report_leaks(leaked, handler_failed)

    def _report_leaks(self, leaked: list[tuple[Any, Kind]], handler_failed: bool) -> None:
        if self.on_leak == "ignore":
            return
        details: list[dict[str, object]] = []
        for obj, kind in leaked:
            detail: dict[str, object] = {"kind": kind.name, "remote": _remote(obj, kind)}
            if kind.close is None:
                detail["hint"] = (
                    "closes only with await: decorate the coroutine you pass to "
                    "asyncio.run() with @managed_connection so it closes inside the loop"
                )
            details.append(detail)
        from lambda_conn._log import WARNING, log_event

        log_event(WARNING, "connections_leaked", count=len(leaked), connections=details)
        if self.on_leak == "raise" and not handler_failed:
            raise LeakError(f"{len(leaked)} connection(s) left open after cleanup: {details}")


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _generator() -> Any:
    yield


async def _async_generator() -> Any:
    yield


_GENERATORS = (type(_generator()), type(_async_generator()))
_warned_generators: set[object] = set()


def _returned_generator(fn: object) -> None:
    """Once per handler: it returned a generator, whose body runs after the scope closed."""
    name = getattr(fn, "__qualname__", type(fn).__qualname__)
    if name in _warned_generators:
        return
    _warned_generators.add(name)
    from lambda_conn._log import WARNING, log_event

    log_event(
        WARNING,
        "handler_returned_generator",
        handler=name,
        hint="its body runs when it is iterated, after the scope has closed: nothing it "
        "opens is tracked; return a list, or decorate the code that iterates it",
    )


def _still_open(obj: Any, kind: Kind) -> bool:
    try:
        return kind.is_open(obj)
    except Exception:
        return False


def _remote(obj: Any, kind: Kind) -> list[str]:
    try:
        return kind.remote(obj)
    except Exception:
        return []


def _close_failed(kind: Kind, exc: Exception) -> None:
    counters.close_errors += 1
    from lambda_conn._log import WARNING, log_event

    # The exception's type and message only: client errors carry no passwords, and the
    # connection's repr (which might) is never formatted.
    from lambda_conn._redact import redact

    message = redact(str(exc))[:300]  # an HTTP client's error may carry a URL with userinfo
    log_event(WARNING, "close_failed", kind=kind.name, error=type(exc).__name__, message=message)


def close_in_flight() -> int:
    """At SIGTERM: close the connections of every scope still running (a timed-out
    invocation's included), newest scope first, so the server sees a clean quit."""
    newest_first = sorted(_entered.copy(), key=lambda scope: scope.serial, reverse=True)
    return sum(scope._close_at_shutdown() for scope in newest_first)


def current_scope() -> Scope | None:
    """The innermost active scope in this thread or task, or None outside any (also in a
    thread or task that copied the context of an invocation that has ended)."""
    scope = _current.get()
    return None if scope is None or scope.closed else scope


def in_invocation() -> bool:
    """Whether an invocation is open here. A scope whose root is closed from the start (the
    pytest plugin's per-test scope) tracks what is opened but is not an invocation, so a
    handler called under it is the outermost invocation, as on Lambda."""
    scope = current_scope()
    return scope is not None and not scope.root.closed


def register(obj: T) -> T:
    """Close ``obj`` (anything with ``close()``, ``aclose()`` or ``dispose()``) at the end of
    the current invocation. Returns ``obj``."""
    scope = _current.get()
    if scope is None or scope.closed:
        where = (
            "after its scope closed (from a thread or task that outlived the invocation)"
            if scope is not None
            else "outside a managed scope"
        )
        raise LambdaConnError(
            f"lambda_conn.register() was called {where}: call it inside a handler "
            "decorated with @managed_connection or inside `with managed_connection():`"
        )
    return scope.register(obj)


class _Untracked:
    """Context manager: nothing opened inside is swept by the enclosing scope."""

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = _current.set(None)

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)


def untracked() -> _Untracked:
    """Open connections that must outlive the invocation (deliberate reuse)."""
    return _Untracked()
