"""SnapStart: no kept connection goes into the snapshot; the ones that were open come back.

A socket opened during Init is frozen into the snapshot and dead in every restored copy
(and every copy would share it). Before the snapshot we close the reused connections; after
restore we reopen those that were open, so the first invocation finds them warm. The hooks
run inside awslambdaric (``snapshot_restore_py``); an exception in them fails the restore,
so they log and never raise.
"""

from __future__ import annotations

import sys
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

_reopen: list[weakref.ref[Any]] = []
_installed = False


def install() -> bool:
    """Register the reused-connection hooks once; False without ``snapshot_restore_py``."""
    global _installed
    if _installed:
        return True
    hooks = _hooks()
    if hooks is None:
        return False
    hooks.register_before_snapshot(before_snapshot)
    hooks.register_after_restore(reopen_reused)
    _installed = True
    return True


def on_restore(hook: Callable[[], None]) -> bool:
    """Run ``hook`` after restore (logged, never raising); False without the module."""
    hooks = _hooks()
    if hooks is None:
        return False
    hooks.register_after_restore(_logged(hook))
    return True


def _hooks() -> Any:
    """``snapshot_restore_py``, which the SnapStart runtimes provide, or None."""
    try:
        import snapshot_restore_py  # type: ignore[import-untyped]
    except ImportError:
        return None
    return snapshot_restore_py


def before_snapshot() -> None:
    reuse = sys.modules.get("lambda_conn._reuse")
    if reuse is None:
        return
    try:
        _reopen[:] = [ref for ref in reuse._registry if _connected(ref)]
        reuse.close_reused_connections()
    except Exception as exc:
        _failed("before_snapshot", exc)


def reopen_reused() -> None:
    refs, _reopen[:] = list(_reopen), []
    for ref in refs:
        reused = ref()
        if reused is None:
            continue
        try:
            reused.get()
        except Exception as exc:  # the handler's first get() will try again
            _failed("after_restore", exc)


def _connected(ref: weakref.ref[Any]) -> bool:
    reused = ref()
    return reused is not None and bool(reused.connected)


def _logged(hook: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        try:
            hook()
        except Exception as exc:
            _failed("after_restore", exc)

    return run


def _failed(phase: str, exc: Exception) -> None:
    from lambda_conn._log import WARNING, log_event

    log_event(
        WARNING,
        "snapstart_hook_failed",
        phase=phase,
        error=type(exc).__name__,
        message=str(exc)[:300],
    )
