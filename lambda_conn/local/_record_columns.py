"""Invocation records kept as columns: what a fleet soak of 10,000 invocations holds.

An ``InvocationRecord`` is an object of 18 fields, with a request id, floats and ints of
its own: about 390 bytes per invocation. The columns keep the same values in arrays (the
request id as its 16 bytes, the outcome and the flags in one 16-bit code), about 70 bytes
per invocation, and what only some invocations have (an Init duration, an exit status) in
dicts by position. An error (its type, message, stack and response) is kept once for every
failure that has the same (the response's ``requestId`` left out: it is the record's),
and a kept response once per record. Reading one builds the record again, equal to the
one appended.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator, Sequence
from typing import Any, overload

from lambda_conn.local._records import OUTCOMES, InvocationRecord, ResetReason

__all__ = ["RecordColumns"]

_RESETS: tuple[ResetReason | None, ...] = (
    None,
    "exited_after_response",
    "timeout",
    "memory",
    "crash",
    "init_error",
)
_OUTCOME_CODE = {outcome: code for code, outcome in enumerate(OUTCOMES)}
_RESET_CODE = {reason: code << 3 for code, reason in enumerate(_RESETS)}
_SIGTERM: tuple[bool | None, ...] = (None, False, True)
_SIGTERM_CODE = {None: 0, False: 1 << 6, True: 2 << 6}
# A code's bits: outcome 0-2, reset reason 3-5, sigterm_sent 6-7, then the two flags.
_COLD = 1 << 8
_EXITED = 1 << 9
_NO_ID = bytes(16)
_NAN = math.nan

#: (error_type, error_message, stack_trace, response): what only some records have.
Extra = tuple[str | None, str | None, list[str] | None, Any]


class _Packed(tuple[tuple[str, ...], tuple[Any, ...]]):
    """A failure's response dict as its keys and values, the request id left out."""


class _RequestId:
    """Where the record's request id goes back into a packed response."""


_REQUEST_ID = _RequestId()
_SHARED_TYPES = (str, list, type(None), _RequestId)


def _id_bytes(request_id: str) -> bytes | None:
    """The 16 bytes of a UUID in its canonical lower-case form; None for anything else
    (kept as it is)."""
    if len(request_id) != 36:
        return None
    try:
        raw = bytes.fromhex(request_id.replace("-", ""))
    except ValueError:
        return None
    return raw if len(raw) == 16 and _id_text(raw) == request_id else None


def _id_text(raw: bytes | bytearray) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class RecordColumns(Sequence[InvocationRecord]):
    """A read-only sequence of invocation records, appended one by one."""

    def __init__(self) -> None:
        self._index = array("q")
        self._ids = bytearray()
        self._odd_ids: dict[int, str] = {}  # request ids not in the canonical UUID form
        self._codes = array("H")
        self._duration = array("d")
        self._response_ms = array("d")  # NaN: None
        self._fds = array("i")  # -1: None
        self._rss = array("q")  # -1: None
        self._environment = array("i")
        self._extra_of = array("i")  # -1: none, else a position in _extras
        self._extras: list[Extra] = []
        self._interned: dict[tuple[int, ...], int] = {}  # failures' extras by identity
        self._keys: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._init_ms: dict[int, float] = {}
        self._exit_status: dict[int, int] = {}

    def append(
        self,
        record: InvocationRecord,
        *,
        index: int,
        environment: int,
        response: Any,
        error_type: str | None,
        error_message: str | None,
        stack_trace: list[str] | None,
    ) -> None:
        """Keep ``record`` with these fields in place of its own."""
        at = len(self._codes)
        raw = _id_bytes(record.request_id)
        if raw is None:
            self._odd_ids[at] = record.request_id
            raw = _NO_ID
        self._ids += raw
        self._index.append(index)
        code = _OUTCOME_CODE[record.outcome] | _RESET_CODE[record.reset_reason]
        code |= _SIGTERM_CODE[record.sigterm_sent]
        if record.cold_start:
            code |= _COLD
        if record.exited_after_response:
            code |= _EXITED
        self._codes.append(code)
        self._duration.append(record.duration_ms)
        response_ms = record.response_ms
        self._response_ms.append(_NAN if response_ms is None else response_ms)
        fds, rss = record.fd_count, record.rss_bytes
        self._fds.append(-1 if fds is None else fds)
        self._rss.append(-1 if rss is None else rss)
        self._environment.append(environment)
        if (
            error_type is None
            and error_message is None
            and stack_trace is None
            and response is None
        ):
            self._extra_of.append(-1)
        else:
            if not record.ok:
                response = self._pack(response, record.request_id)
            extra = (error_type, error_message, stack_trace, response)
            self._extra_of.append(self._add_extra(extra, record.ok))
        if record.init_duration_ms is not None:
            self._init_ms[at] = record.init_duration_ms
        if record.exit_status is not None:
            self._exit_status[at] = record.exit_status

    def _pack(self, response: Any, request_id: str) -> Any:
        if type(response) is not dict or not all(type(key) is str for key in response):
            return response
        keys = tuple(response)
        values = tuple(
            _REQUEST_ID if type(v) is str and v == request_id else v for v in response.values()
        )
        return _Packed((self._keys.setdefault(keys, keys), values))

    def _add_extra(self, extra: Extra, ok: bool) -> int:
        """Its position in ``_extras``: a failure's is shared with every failure whose
        parts are the same objects (the collector keeps one copy of equal strings and
        stacks), when those are all of a kind it shares."""
        response = extra[3]
        if not ok and (response is None or isinstance(response, _Packed)):
            values = () if response is None else response[1]
            if all(isinstance(v, _SHARED_TYPES) for v in values):
                ident = (*map(id, extra[:3]), id(response and response[0]), *map(id, values))
                at = self._interned.get(ident)
                if at is None:
                    at = self._interned[ident] = len(self._extras)
                    self._extras.append(extra)
                return at
        self._extras.append(extra)
        return len(self._extras) - 1

    def __len__(self) -> int:
        return len(self._codes)

    @overload
    def __getitem__(self, at: int) -> InvocationRecord: ...

    @overload
    def __getitem__(self, at: slice) -> list[InvocationRecord]: ...

    def __getitem__(self, at: int | slice) -> InvocationRecord | list[InvocationRecord]:
        if isinstance(at, slice):
            return [self._record(i) for i in range(*at.indices(len(self)))]
        if at < 0:
            at += len(self)
        if not 0 <= at < len(self):
            raise IndexError("record index out of range")
        return self._record(at)

    def __iter__(self) -> Iterator[InvocationRecord]:
        for at in range(len(self)):
            yield self._record(at)

    def __repr__(self) -> str:
        return f"<RecordColumns: {len(self)} invocation records>"

    def _record(self, at: int) -> InvocationRecord:
        code = self._codes[at]
        request_id = self._odd_ids.get(at)
        if request_id is None:
            request_id = _id_text(self._ids[16 * at : 16 * at + 16])
        extra_at = self._extra_of[at]
        error_type = error_message = stack_trace = response = None
        if extra_at >= 0:
            error_type, error_message, stack_trace, response = self._extras[extra_at]
            if isinstance(response, _Packed):
                keys, values = response
                response = dict(
                    zip(keys, (request_id if v is _REQUEST_ID else v for v in values), strict=True)
                )
        response_ms = self._response_ms[at]
        fds, rss = self._fds[at], self._rss[at]
        return InvocationRecord(
            index=self._index[at],
            request_id=request_id,
            outcome=OUTCOMES[code & 7],
            error_type=error_type,
            error_message=error_message,
            stack_trace=stack_trace,
            response=response,
            duration_ms=self._duration[at],
            response_ms=None if response_ms != response_ms else response_ms,  # NaN: None
            cold_start=bool(code & _COLD),
            init_duration_ms=self._init_ms.get(at),
            fd_count=None if fds < 0 else fds,
            rss_bytes=None if rss < 0 else rss,
            exited_after_response=bool(code & _EXITED),
            reset_reason=_RESETS[(code >> 3) & 7],
            exit_status=self._exit_status.get(at),
            sigterm_sent=_SIGTERM[(code >> 6) & 3],
            environment=self._environment[at],
        )

    def by_index(self) -> list[int]:
        """Positions in the order of the records' ``index`` (they finish out of order)."""
        return sorted(range(len(self)), key=self._index.__getitem__)

    def reordered(self, order: Sequence[int]) -> RecordColumns:
        """The records at positions ``order``, in that order (each position once)."""
        new = RecordColumns()
        new._index = array("q", (self._index[i] for i in order))
        ids = self._ids
        new._ids = bytearray(b"".join(ids[16 * i : 16 * i + 16] for i in order))
        new._codes = array("H", (self._codes[i] for i in order))
        new._duration = array("d", (self._duration[i] for i in order))
        new._response_ms = array("d", (self._response_ms[i] for i in order))
        new._fds = array("i", (self._fds[i] for i in order))
        new._rss = array("q", (self._rss[i] for i in order))
        new._environment = array("i", (self._environment[i] for i in order))
        moved = {old: at for at, old in enumerate(order)}
        new._odd_ids = {moved[old]: v for old, v in self._odd_ids.items()}
        new._extra_of = array("i", (self._extra_of[i] for i in order))
        new._extras, new._interned, new._keys = self._extras, self._interned, self._keys
        new._init_ms = {moved[old]: v for old, v in self._init_ms.items()}
        new._exit_status = {moved[old]: v for old, v in self._exit_status.items()}
        return new
