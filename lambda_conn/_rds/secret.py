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


#: A secret at least this long is masked wherever it occurs; a shorter one only where it
#: stands alone (no letter or digit either side): a one-letter password masked inside
#: every word would turn "expired" into "e***pired" and hide the message, not the secret.
_MASK_ANYWHERE = 8


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each (non-empty) secret replaced by ``***``."""
    for secret in secrets:
        if secret and secret in text:
            if len(secret) >= _MASK_ANYWHERE:
                text = text.replace(secret, MASK)
            else:
                text = _mask_standalone(text, secret)
    return text


def _mask_standalone(text: str, secret: str) -> str:
    parts = []
    start = 0
    at = text.find(secret)
    while at != -1:
        end = at + len(secret)
        before = text[at - 1] if at > 0 else ""
        after = text[end] if end < len(text) else ""
        if before.isalnum() or after.isalnum():
            at = text.find(secret, at + 1)
            continue
        parts.append(text[start:at])
        parts.append(MASK)
        start = end
        at = text.find(secret, end)
    parts.append(text[start:])
    return "".join(parts)


def scrub_chain(exc: BaseException | None, secrets: Iterable[str]) -> None:
    """Scrub ``secrets`` out of ``exc`` and every exception chained to it, in place.

    The error we raise keeps its cause (``raise ... from``) for the traceback; what a
    driver or a peer put in a message (a proxy that echoes the login, say) must not reach
    an error tracker through ``__cause__`` or ``__context__``.
    """
    known = [secret for secret in secrets if secret]
    seen: set[int] = set()
    pending = [exc]
    while known and pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        current.args = tuple(
            redact(arg, known) if isinstance(arg, str) else arg for arg in current.args
        )
        if isinstance(current, OSError):
            if isinstance(current.strerror, str):
                current.strerror = redact(current.strerror, known)
            if isinstance(current.filename, str):
                current.filename = redact(current.filename, known)
        pending += [current.__cause__, current.__context__]
