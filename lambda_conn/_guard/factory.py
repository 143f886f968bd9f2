"""Build guards from settings, and set up what the process needs once (shutdown, SnapStart).

The guard configured by the environment alone is one per process and shared by
``@managed_connection`` and a bare ``@health_guard``; keyword options make a guard of
their own.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from lambda_conn._guard import probes, shutdown, snapstart
from lambda_conn._guard.config import HealthConfig, Platform, load_config
from lambda_conn._guard.guard import HealthGuard

if TYPE_CHECKING:
    from collections.abc import Mapping

_UNSET: Any = object()
_env_guard: Any = _UNSET  # HealthGuard | None once built


def platform() -> Platform:
    return Platform.from_environ(os.environ, probes.fd_soft_limit())


def build(overrides: Mapping[str, Any]) -> HealthGuard | None:
    """Validate settings (raising ``ConfigurationError`` at Init), set up the process, and
    return a guard, or None when no limit is configured."""
    here = platform()
    config = load_config(os.environ, overrides, here)
    guard = HealthGuard(config, here) if config.enabled else None
    _set_up_process(config, here, guard)
    return guard


def env_guard() -> HealthGuard | None:
    """The guard the environment configures (built once), or None."""
    global _env_guard
    if _env_guard is _UNSET:
        _env_guard = build({})
    guard: HealthGuard | None = _env_guard
    return guard


def _set_up_process(config: HealthConfig, here: Platform, guard: HealthGuard | None) -> None:
    if config.wants_shutdown:
        shutdown.install(here)
    if here.snap_start and (guard is not None or config.wants_shutdown):
        snapstart.install()
        if guard is not None:
            snapstart.on_restore(guard.restored)
    if guard is not None:
        from lambda_conn._log import INFO, log_event

        log_event(
            INFO,
            "health_guard_on",
            config=repr(config),
            in_lambda=here.in_lambda,
            multi_concurrency=here.max_concurrency,
            snap_start=here.snap_start,
        )


def enable_graceful_shutdown() -> bool:
    """Close ``reused_connection``s at SIGTERM, and around SnapStart snapshots.

    Registers a no-op internal extension (so that Lambda sends SIGTERM at all) and a SIGTERM
    handler chained in front of any existing one. Call it at module level, during Init:
    extension registration closes with the first invocation. Does nothing outside Lambda
    (no ``AWS_LAMBDA_RUNTIME_API``). Returns True when it installed the handler now.
    """
    here = platform()
    if here.snap_start:
        snapstart.install()
    return shutdown.install(here)


def _reset_for_tests() -> None:
    global _env_guard
    _env_guard = _UNSET
