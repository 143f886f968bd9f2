"""Credentials that never show: not in reprs, messages, logs or metrics.

A password held in a plain attribute ends up in a ``repr()``, a debugger, an error
tracker's local-variable dump. ``Secret`` holds it behind ``reveal()`` and prints as
``'***'``; ``redact`` scrubs known secrets from text we did not write (a driver's error
message) before we log or raise it.
"""

from __future__ import annotations

from collections.abc import Iterable

MASK = "***"


class Secret:
    """A credential: ``repr``/``str`` print ``'***'``; ``reveal()`` is the only way in."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return repr(MASK)

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> str | tuple[object, ...]:
        # Pickling would write the value to wherever the pickle goes (a cache, a queue).
        raise TypeError("a Secret cannot be pickled")


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each (non-empty) secret replaced by ``***``."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, MASK)
    return text
