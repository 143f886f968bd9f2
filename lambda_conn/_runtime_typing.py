"""Run-time stand-ins for the few ``typing`` names used outside annotations.

``import typing`` (and the ``re``/``enum`` it pulls in) costs several milliseconds of every
cold start, and awslambdaric's bootstrap has not imported it. Modules on the
``import lambda_conn`` path import the real names under ``if TYPE_CHECKING:``, which is all
mypy reads, and these stand-ins in its ``else:`` branch, which is all Python runs.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def TypeVar(name: str, *constraints: object, **options: object) -> str:
    """Annotations are strings (``from __future__ import annotations``): the name suffices."""
    return name


def overload(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The implementation that follows replaces each overload, as with typing's."""
    return fn


def cast(typ: object, value: Any) -> Any:
    return value


class Generic:
    """``class C(Generic[T])`` and ``C[int]`` work; nothing is recorded."""

    __slots__ = ()

    def __class_getitem__(cls, params: object) -> type:
        return cls
