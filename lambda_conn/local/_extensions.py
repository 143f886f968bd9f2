"""The Extensions API registration rules, kept apart from HTTP so they can be unit-tested.

Every registration here is an *internal* extension (a thread of the runtime process):
the local runtime starts no executables from /opt/extensions, so the rules are the
internal ones: events INVOKE or nothing, SHUTDOWN refused, at most ten, unique names,
and no registration once the runtime has asked for its first invocation.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from lambda_conn.local._constants import MAX_EXTENSIONS

__all__ = ["Extension", "ExtensionRegistry", "RegistrationError"]

_INTERNAL_EVENTS = frozenset({"INVOKE"})
_KNOWN_EVENTS = frozenset({"INVOKE", "SHUTDOWN"})


class RegistrationError(Exception):
    """A refused registration; ``error_type`` is the Extensions API errorType (HTTP 403)."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


@dataclass(eq=False)
class Extension:
    """One registered extension and its event mailbox.

    ``ready`` is True while it is blocked in ``/event/next``; the invoke cycle ends and
    the freeze happens only when every extension is ready.
    """

    name: str
    identifier: str
    events: frozenset[str]
    queue: deque[bytes] = field(default_factory=deque)
    ready: bool = False
    next_calls: int = 0


class ExtensionRegistry:
    """Registered extensions of one execution environment (not thread-safe: callers lock)."""

    def __init__(self, limit: int = MAX_EXTENSIONS) -> None:
        self._limit = limit
        self._by_id: dict[str, Extension] = {}
        self.closed = False

    def register(self, name: str, events: object) -> Extension:
        """Validate like RAPID does for internal extensions, then add one."""
        if not name:
            raise RegistrationError("Extension.InvalidExtensionName", "Empty extension name")
        if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
            raise RegistrationError(
                "InvalidRequestFormat", 'body must be {"events": [...]} with event names'
            )
        for event in events:
            if event not in _KNOWN_EVENTS:
                raise RegistrationError(
                    "Extension.InvalidEventType", f"{event}: unknown event type"
                )
            if event not in _INTERNAL_EVENTS:
                raise RegistrationError(
                    "Extension.InvalidEventType",
                    f"{event}: internal extensions may register for INVOKE only "
                    "(SHUTDOWN is for external extensions in /opt/extensions)",
                )
        if self.closed:
            raise RegistrationError(
                "Extension.RegistrationClosed", "Extension registration closed already"
            )
        if any(ext.name == name for ext in self._by_id.values()):
            raise RegistrationError(
                "Extension.InvalidExtensionState", "Extension with this name already registered"
            )
        if len(self._by_id) >= self._limit:
            raise RegistrationError(
                "Extension.TooManyExtensions", f"Extension limit ({self._limit}) reached"
            )
        ext = Extension(name=name, identifier=str(uuid.uuid4()), events=frozenset(events))
        self._by_id[ext.identifier] = ext
        return ext

    def close(self) -> None:
        """Called on the runtime's first ``/next``: later registrations get 403."""
        self.closed = True

    def get(self, identifier: str) -> Extension | None:
        return self._by_id.get(identifier)

    def all_ready(self) -> bool:
        """True when every extension is blocked in ``/event/next``."""
        return all(ext.ready for ext in self._by_id.values())

    def subscribed(self, event: str) -> list[Extension]:
        return [ext for ext in self._by_id.values() if event in ext.events]

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Extension]:
        return iter(list(self._by_id.values()))
