"""RecordColumns gives back, field for field, the records a fleet soak appended to it."""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from typing import Any

import pytest

from lambda_conn.local._record_columns import RecordColumns
from lambda_conn.local._records import OUTCOMES, InvocationRecord


def _record(k: int, **fields: Any) -> InvocationRecord:
    base: dict[str, Any] = {
        "index": k,
        "request_id": str(uuid.uuid4()),
        "outcome": "ok",
        "error_type": None,
        "error_message": None,
        "stack_trace": None,
        "response": None,
        "duration_ms": 1.0 / (k + 3),  # not exact in decimal: kept as the same double
        "response_ms": 0.1 * k,
        "cold_start": False,
        "init_duration_ms": None,
        "fd_count": 7,
        "rss_bytes": 30_000_000 + k,
        "exited_after_response": False,
        "reset_reason": None,
        "exit_status": None,
        "sigterm_sent": None,
        "environment": 1,
    }
    base.update(fields)
    return InvocationRecord(**base)


def _append(columns: RecordColumns, record: InvocationRecord) -> None:
    columns.append(
        record,
        index=record.index,
        environment=record.environment,
        response=record.response,
        error_type=record.error_type,
        error_message=record.error_message,
        stack_trace=record.stack_trace,
    )


def _variety() -> list[InvocationRecord]:
    resets = (None, "exited_after_response", "timeout", "memory", "crash", "init_error")
    records = []
    combos = itertools.product(OUTCOMES, resets, (None, False, True), (False, True))
    for k, (outcome, reset, sigterm, flag) in enumerate(combos):
        records.append(
            _record(
                k,
                outcome=outcome,
                reset_reason=reset,
                sigterm_sent=sigterm,
                cold_start=flag,
                exited_after_response=not flag,
                init_duration_ms=12.5 + k if flag else None,
                exit_status=(-9 if k % 3 else 0) if reset else None,
                response_ms=None if k % 4 == 0 else 0.3 * k,
                fd_count=None if k % 5 == 0 else k,
                rss_bytes=None if k % 7 == 0 else 2**40 + k,
                environment=k % 11,
                response={"pid": k, "nested": [1, {"a": None}]} if outcome == "ok" else None,
            )
        )
    stack = ['  File "app.py", line 3, in handler\n']
    for k in range(len(records), len(records) + 4):
        request_id = str(uuid.uuid4())
        response = {
            "errorMessage": "too many connections",
            "errorType": "OperationalError",
            "requestId": request_id,
            "stackTrace": stack,
        }
        records.append(
            _record(
                k,
                request_id=request_id,
                outcome="function_error",
                error_type="OperationalError",
                error_message="too many connections",
                stack_trace=stack,
                response=response,
            )
        )
    # request ids not in the canonical form are kept as they are
    records.append(_record(len(records), request_id="not-a-uuid"))
    records.append(_record(len(records), request_id=str(uuid.uuid4()).upper()))
    records.append(_record(len(records), request_id="x" * 36))
    return records


def test_every_field_comes_back_as_appended():
    records = _variety()
    columns = RecordColumns()
    for record in records:
        _append(columns, record)
    assert len(columns) == len(records)
    assert list(columns) == records
    assert [columns[i] for i in range(len(records))] == records
    assert columns[-1] == records[-1]
    assert columns[3:9:2] == records[3:9:2]
    for back, record in zip(columns, records, strict=True):
        assert type(back.duration_ms) is float and back.duration_ms == record.duration_ms
    with pytest.raises(IndexError):
        columns[len(records)]


def test_identical_failures_share_one_copy_and_keep_their_own_request_id():
    records = [r for r in _variety() if r.outcome == "function_error" and r.stack_trace]
    columns = RecordColumns()
    for record in records:
        _append(columns, record)
    backs = list(columns)
    assert [b.response["requestId"] for b in backs] == [r.request_id for r in records]
    assert [b.request_id for b in backs] == [r.request_id for r in records]
    assert len({id(b.error_message) for b in backs}) == 1
    assert len({id(b.stack_trace) for b in backs}) == 1
    assert len(columns._extras) == 1


def test_reordered_by_index():
    records = _variety()
    shuffled = records[7:] + records[:7]
    shuffled.reverse()
    columns = RecordColumns()
    for record in shuffled:
        _append(columns, record)
    order = columns.by_index()
    assert [shuffled[i].index for i in order] == sorted(r.index for r in records)
    assert list(columns.reordered(order)) == records


def test_the_fields_the_fleet_sets_replace_the_records_own():
    record = _record(0, index=5, environment=3, response={"kept": False})
    columns = RecordColumns()
    columns.append(
        record,
        index=42,
        environment=9,
        response=None,
        error_type=None,
        error_message=None,
        stack_trace=None,
    )
    assert columns[0] == dataclasses.replace(record, index=42, environment=9, response=None)
