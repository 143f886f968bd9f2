"""Hide credentials in values we echo back in error messages (a DSN passed by mistake)."""

from __future__ import annotations

import re
from typing import Any

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/@\s]*@")


def redact(value: Any) -> Any:
    """``mysql://user:secret@host/db`` -> ``mysql://***@host/db``; other values unchanged."""
    if isinstance(value, str) and "://" in value:
        return _USERINFO.sub(r"\g<scheme>***@", value)
    return value
