"""Exceptions raised by lambda_conn itself (never in place of a handler's own)."""

from __future__ import annotations


class LambdaConnError(Exception):
    """Base class for lambda_conn's own errors."""


class ConfigurationError(LambdaConnError, ValueError):
    """A setting (keyword option or environment variable) has a value we cannot accept.

    Raised at decoration or Init time so a misconfiguration never reaches a request.
    """

    def __init__(self, setting: str, value: object, accepted: str, *, secret: bool = False) -> None:
        # The value only in a form that cannot reveal a credential (``_redact.shown``):
        # a value in the wrong setting is often a secret in the wrong place.
        from lambda_conn._redact import shown
        from lambda_conn._settings import safe_to_show

        self.setting = setting
        safe = not secret and safe_to_show(setting)
        self.value = shown(value, secret=secret, safe=safe)  # never the raw value
        self.accepted = accepted  # built by us; an OS error inside it is scrubbed where made
        super().__init__(f"{setting}={self.value} is not valid: expected {accepted}")


class LeakError(LambdaConnError):
    """Connections stayed open after the scope closed them (only with ``on_leak="raise"``)."""


class ClosedByScopeError(LambdaConnError):
    """Read from an object whose connection its ``@managed_connection`` scope closed.

    Raised instead of a silently short body or a client's internal error, by a streamed
    response or unbuffered result the scope could not hand over (one that was not returned
    from the decorated function).
    """
