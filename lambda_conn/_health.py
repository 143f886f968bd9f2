"""Where ``@managed_connection`` gets its health guard (see ``lambda_conn._guard``).

When no health variable is set this imports one small module at decoration time and
returns None, so the decorator adds nothing per invocation.
"""

from __future__ import annotations

from typing import Any


def guard_for_handler() -> Any:
    """The guard to run after each invocation, or None when it is not configured.

    The guard is on when ``FD_HEALTH_LIMIT``, ``MEMORY_HEALTH_LIMIT`` or
    ``HEALTH_MAX_INVOCATIONS`` is set. Any bad health setting raises ``ConfigurationError``
    here, at Init.
    """
    import os

    from lambda_conn._settings import env_value, in_group

    if all(env_value(os.environ, setting.name) is None for setting in in_group("health")):
        return None
    from lambda_conn._guard import factory

    guard = factory.env_guard()
    if guard is not None:
        guard.shared_with_managed = True
    return guard
