"""The wrapt wrapper every integration puts around a client's ``__init__``."""

from __future__ import annotations

from lambda_conn._kinds import Kind
from lambda_conn._scope import _current, untracked

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any


def tracker(client: str, kind: Kind, *, own: Any = None, whole: bool = False) -> Any:
    """A wrapt wrapper that registers each new instance in the current scope.

    ``own`` turns the instance into what the scope holds (for objects that need bookkeeping).
    ``whole``: what the constructor builds inside (a Session's pool managers, a client's
    connection pool) is not tracked on its own: the object the user created is tracked once
    and its ``kind`` closes those internals through it.
    """

    def track(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        scope = _current.get()
        if whole and scope is not None:
            with untracked():
                wrapped(*args, **kwargs)
        else:
            wrapped(*args, **kwargs)  # a constructor that fails raises here: nothing to track
        if scope is not None and scope.tracks(client):
            scope.register(instance if own is None else own(instance), kind)

    return track


def result_tracker(client: str, kind: Kind) -> Any:
    """A wrapt wrapper for a factory (``boto3.client``, ``Redis.from_url``): what it builds
    inside is not tracked on its own; the object it returns is, once."""

    def track(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        scope = _current.get()
        if scope is None:
            return wrapped(*args, **kwargs)
        with untracked():
            obj = wrapped(*args, **kwargs)
        if scope.tracks(client):
            scope.register(obj, kind)
        return obj

    return track


def pool_probes(
    connections: Callable[[Any], Iterable[Any]],
    is_open: Callable[[Any], bool],
    remote: Callable[[Any], list[str]],
) -> tuple[Callable[[Any], bool], Callable[[Any], list[str]]]:
    """A pool's ``is_open`` and ``remote``, derived from the probes of its connections: a
    pool is open while any connection it holds is, and names the remotes of those."""

    def pool_is_open(pool: Any) -> bool:
        return any(is_open(conn) for conn in connections(pool))

    def pool_remote(pool: Any) -> list[str]:
        return [r for conn in connections(pool) if is_open(conn) for r in remote(conn)]

    return pool_is_open, pool_remote


def close_each(objects: Iterable[Any], close: Callable[[Any], object]) -> None:
    """``close(obj)`` for every one of ``objects``, each tried even when one before failed;
    then the first failure is raised (a caller's close raises unless all closed)."""
    errors = []
    for obj in objects:
        try:
            close(obj)
        except Exception as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


def untracked_call(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """A wrapt wrapper for a pool's own connect: the pool owns what it connects, even when
    it connects inside a handler, so the scope does not track it."""
    with untracked():
        return wrapped(*args, **kwargs)


async def untracked_await(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``untracked_call`` for a pool's async connect."""
    with untracked():
        return await wrapped(*args, **kwargs)
