"""The wrapt wrapper every integration puts around a client's ``__init__``."""

from __future__ import annotations

from lambda_conn._kinds import Kind
from lambda_conn._scope import _current

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def tracker(client: str, kind: Kind, *, own: Any = None) -> Any:
    """A wrapt wrapper that registers each new instance in the current scope.

    ``own`` turns the instance into what the scope holds (for objects that need bookkeeping).
    """

    def track(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        wrapped(*args, **kwargs)  # a constructor that fails raises here: nothing to track
        scope = _current.get()
        if scope is not None and scope.tracks(client):
            scope.register(instance if own is None else own(instance), kind)

    return track
