"""How a value we refuse is shown back: never in a form that could reveal a credential.

A value in the wrong setting is often a secret in the wrong place (a DSN passed as the
host, a password given to the wrong keyword, an environment variable that holds a key).
Every message and log line that echoes a user's value goes through :func:`shown`:

- numbers, booleans and None, number-like strings (``"150%"``, ``"900XB"``, ``"5m"``)
  and certificate file paths (``"/opt/ca.pem"``) are shown as they are: they help, and
  they are no credential worth the name;
- a URL, DSN or conninfo string is shown with its credentials masked
  (``mysql://***@db/app``, ``password=***``);
- a word given to a setting that can hold no secret (a client name, an enum, a boolean)
  is shown as it is (``clients='pymsql'``);
- any other string as its type and length (``<str of 12 characters>``), a container as
  its type and size, anything else as its type: never its ``repr``, which for a client or
  a credentials object may hold the secret.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MASK = "***"
_CREDENTIAL_KEYS = ("password", "passwd", "pwd", "secret", "token", "key", "auth")
_SAFE_UNIT_LETTERS = 3  # "MiB", "ms": a unit, not a word
_SAFE_LENGTH = 12
_WORD_LENGTH = 32  # the longest value a setting that can hold no secret shows as it is
_NUMBER_MARKS = frozenset(".%+- _")
_CERT_EXTENSIONS = (".pem", ".crt", ".cer", ".der", ".p12", ".bundle")


def redact(value: Any) -> Any:
    """``mysql://user:secret@host/db`` -> ``mysql://***@host/db``; other values unchanged."""
    if isinstance(value, str) and "://" in value:
        return _mask_userinfo(value)
    return value


def shown(value: Any, *, secret: bool = False, safe: bool = False) -> str:
    """The form in which ``value`` may appear in a message or a log line (see the module).

    ``secret``: the setting itself holds a credential: only its type and length, always.
    ``safe``: the setting can hold no secret (a client name, an enum, a boolean; see
    ``_settings.safe_to_show``): a word is shown as it is, so a typo reads as one. Only a
    word (ASCII letters of one case, digits, ``_.-``, at most 32 characters): anything else
    is shown as for any setting, in case a secret landed in the wrong place.
    """
    if secret:
        return _type_and_size(value)
    if safe and isinstance(value, str) and _word(value):
        return repr(value)
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, str):
        if _number_like(value) or _certificate_path(value):
            return repr(value)
        masked = _masked_credentials(value)
        if masked is not None:
            return repr(masked)
    return _type_and_size(value)


def scrub(text: str, value: Any, form: str) -> str:
    """``text`` (a message built around ``value``, an OS error's, say) with every occurrence
    of ``value`` replaced by ``form``, its shown form, unless that shows it as it is."""
    if isinstance(value, str) and value and form != repr(value) and value in text:
        return text.replace(value, form)
    return text


def _word(text: str) -> bool:
    return (
        0 < len(text) <= _WORD_LENGTH
        and text.isascii()
        and text[0].isalpha()
        and (text == text.lower() or text == text.upper())
        and all(char.isalnum() or char in "_.-" for char in text)
    )


def _type_and_size(value: Any) -> str:
    name = type(value).__qualname__
    if isinstance(value, str):
        return f"<str of {len(value)} characters>"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{name} of {len(value)} bytes>"
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        return f"<{name} of {len(value)} items>"
    return f"<{name}>"


def _number_like(text: str) -> bool:
    """A number with at most a short unit or percent sign (``-1``, ``0.5``, ``80%``,
    ``900MB``, ``50%%``): the figure helps, and it is no credential worth the name."""
    if len(text) > _SAFE_LENGTH:
        return False
    letters = sum(c.isalpha() for c in text)
    return letters <= _SAFE_UNIT_LETTERS and all(
        c.isalpha() or c.isdigit() or c in _NUMBER_MARKS for c in text
    )


def _certificate_path(text: str) -> bool:
    """``/opt/rds-ca.pem``: a file name with a certificate's extension, no spaces."""
    return (
        text.lower().endswith(_CERT_EXTENSIONS)
        and "/" in text
        and not any(c.isspace() or c in "@:?=" for c in text)
    )


def _masked_credentials(text: str) -> str | None:
    """``text`` with userinfo and credential parameters masked, or None if it has neither."""
    if "://" not in text and "@" not in text and "=" not in text:
        return None
    masked = _mask_userinfo(text) if "://" in text else text
    if "://" not in text and "@" in text:
        masked = MASK + masked[masked.rindex("@") :]  # user:password@host
    masked = _mask_parameters(masked)
    return masked if masked != text else None


def _mask_userinfo(text: str) -> str:
    """Every ``scheme://user:password@host`` in ``text`` -> ``scheme://***@host``."""
    out: list[str] = []
    rest = text
    while "://" in rest:
        head, _, tail = rest.partition("://")
        out.append(f"{head}://")
        # Up to the last "@" of the URL: a password with an unescaped "/" or "@" in it
        # would otherwise be cut in two and half shown.
        end = len(tail)
        for stop in " \t\n'\"":
            index = tail.find(stop)
            if index != -1:
                end = min(end, index)
        url = tail[:end]
        at = url.rfind("@")  # an "@" in a path is masked too: the safe side
        if at != -1:
            out.append(MASK + url[at:])
        else:
            out.append(url)
        rest = tail[end:]
    out.append(rest)
    return "".join(out)


def _mask_parameters(text: str) -> str:
    """``password=x`` (conninfo, URL query) -> ``password=***``."""
    out: list[str] = []
    i = 0
    lowered = text.lower()
    while i < len(text):
        j = text.find("=", i)
        if j == -1:
            out.append(text[i:])
            break
        start = j
        while start > 0 and (text[start - 1].isalnum() or text[start - 1] in "_-"):
            start -= 1
        key = lowered[start:j]
        out.append(text[i : j + 1])
        end = j + 1
        while end < len(text) and text[end] not in " &;,\t\n":
            end += 1
        if any(part in key for part in _CREDENTIAL_KEYS) and end > j + 1:
            out.append(MASK)
        else:
            out.append(text[j + 1 : end])
        i = end
    return "".join(out)
