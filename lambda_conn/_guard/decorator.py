"""``@health_guard``: the health guard for handlers that need no connection management.

``@health_guard`` takes its settings from the environment (the same guard
``@managed_connection`` uses); ``@health_guard(fd_limit="50%", ...)`` overrides them.
With no limit configured it returns the handler itself: nothing runs per invocation.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, TypeVar, overload

from lambda_conn._guard.config import KEYWORDS
from lambda_conn._guard.guard import HealthGuard, outer_health_guard
from lambda_conn._scope import in_invocation
from lambda_conn._shapes import is_coroutine_function

if TYPE_CHECKING:
    from collections.abc import Callable

F = TypeVar("F", bound="Callable[..., Any]")


class _FromEnv:
    """Default of every option: take the environment variable (or the default)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "FROM_ENV"


FROM_ENV: Any = _FromEnv()


def _guard_for(overrides: dict[str, Any]) -> HealthGuard | None:
    from lambda_conn._guard import factory

    if not overrides:
        return factory.env_guard()
    return factory.build(overrides)


def _wrap(handler: F, guard: HealthGuard) -> F:
    def leaves_check_to_outer() -> bool:
        # An outer @health_guard checks after us; an outer @managed_connection holding this
        # guard checks after its scope has closed the invocation's connections.
        return outer_health_guard.get() > 0 or (guard.shared_with_managed and in_invocation())

    if is_coroutine_function(handler):

        @functools.wraps(handler)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            leave = leaves_check_to_outer()
            token = outer_health_guard.set(outer_health_guard.get() + 1)
            try:
                return await handler(*args, **kwargs)
            finally:
                outer_health_guard.reset(token)
                if not leave:
                    guard.check(args)

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        leave = leaves_check_to_outer()
        token = outer_health_guard.set(outer_health_guard.get() + 1)
        try:
            return handler(*args, **kwargs)
        finally:
            outer_health_guard.reset(token)
            if not leave:
                guard.check(args)

    return wrapper  # type: ignore[return-value]


@overload
def health_guard(
    handler: F,
    /,
    *,
    fd_limit: int | str | None = ...,
    memory_limit: str | None = ...,
    max_invocations: int | str | None = ...,
    min_lifetime: float | str = ...,
    jitter: float | str = ...,
    report_only: bool | str = ...,
    retrying_triggers: str = ...,
    hard_ceiling: float | str = ...,
    graceful_shutdown: bool | str | None = ...,
) -> F: ...
@overload
def health_guard(
    handler: None = None,
    /,
    *,
    fd_limit: int | str | None = ...,
    memory_limit: str | None = ...,
    max_invocations: int | str | None = ...,
    min_lifetime: float | str = ...,
    jitter: float | str = ...,
    report_only: bool | str = ...,
    retrying_triggers: str = ...,
    hard_ceiling: float | str = ...,
    graceful_shutdown: bool | str | None = ...,
) -> Callable[[F], F]: ...
def health_guard(
    handler: Any = None,
    /,
    *,
    fd_limit: Any = FROM_ENV,
    memory_limit: Any = FROM_ENV,
    max_invocations: Any = FROM_ENV,
    min_lifetime: Any = FROM_ENV,
    jitter: Any = FROM_ENV,
    report_only: Any = FROM_ENV,
    retrying_triggers: Any = FROM_ENV,
    hard_ceiling: Any = FROM_ENV,
    graceful_shutdown: Any = FROM_ENV,
) -> Any:
    """Recycle the execution environment after the response when it leaks past a limit.

    ``@health_guard`` or ``@health_guard(fd_limit="50%", memory_limit="80%", ...)`` on a sync
    or async handler. Each keyword overrides its environment variable (``fd_limit`` ->
    ``FD_HEALTH_LIMIT``, ``memory_limit`` -> ``MEMORY_HEALTH_LIMIT``, ``max_invocations`` ->
    ``HEALTH_MAX_INVOCATIONS``, the others ``HEALTH_<NAME>``); None turns a limit off. A bad
    value raises ``ConfigurationError`` now, at Init. Outside Lambda it only reports.
    """
    # The keywords are those of the settings table (a test checks this signature matches).
    given = locals()
    overrides = {name: given[name] for name in KEYWORDS if given[name] is not FROM_ENV}
    if handler is not None and not callable(handler):
        from lambda_conn._redact import shown

        form = shown(handler)
        raise TypeError(
            f"health_guard() takes its options as keywords, got {form}: did you mean "
            f"health_guard(fd_limit={form}) or health_guard(memory_limit={form})?"
        )

    guard = _guard_for(overrides)  # validated here, where a mistake is written: at Init

    def decorate(fn: F) -> F:
        if not callable(fn):
            raise TypeError(f"@health_guard decorates a function, got {type(fn).__name__}")
        return fn if guard is None else _wrap(fn, guard)

    return decorate if handler is None else decorate(handler)
