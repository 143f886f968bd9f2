"""Which invocations the platform may retry, told from the event's shape.

Event source mappings (SQS, Kinesis, DynamoDB streams, Kafka, MQ, DocumentDB) retry a
batch whose invocation "failed", and asynchronous invokes (S3, SNS, EventBridge, ...) retry
an event. Whether an environment that exits *after* posting the response counts as failed
is undocumented; if it does, a recycle means the batch runs twice. The guard therefore
treats these triggers by policy (``HEALTH_RETRYING_TRIGGERS``) and logs the ids that let an
error-metric blip be matched with a recycle. A direct ``InvocationType=Event`` invoke with
an arbitrary payload cannot be recognised: it counts as a request.
"""

from __future__ import annotations

from typing import Any

REQUEST = "request"  # synchronous as far as the event shows (API Gateway, URL, ALB, direct)
BATCH = "batch"  # event source mapping: the whole batch is retried
ASYNC = "async"  # asynchronous invoke by a service: the event is retried

# Records[].eventSource (or EventSource for SNS) -> (kind, field path of a record id).
_RECORD_SOURCES: dict[str, tuple[str, tuple[str, ...]]] = {
    "aws:sqs": (BATCH, ("messageId",)),
    "aws:kinesis": (BATCH, ("eventID",)),
    "aws:dynamodb": (BATCH, ("eventID",)),
    "aws:sns": (ASYNC, ("Sns", "MessageId")),
    "aws:s3": (ASYNC, ("responseElements", "x-amz-request-id")),
    "aws:ses": (ASYNC, ("ses", "mail", "messageId")),
}
# Top-level eventSource of mappings that do not use Records -> key of the record list.
_BATCH_SOURCES = {
    "aws:kafka": "records",
    "SelfManagedKafka": "records",
    "aws:mq": "messages",
    "aws:rmq": "rmqMessagesByQueue",
    "aws:docdb": "events",
}


class Trigger:
    """What invoked the function, as far as the event tells."""

    __slots__ = ("first_id", "kind", "last_id", "records", "source")

    def __init__(
        self,
        kind: str,
        source: str | None = None,
        records: int | None = None,
        first_id: str | None = None,
        last_id: str | None = None,
    ) -> None:
        self.kind = kind
        self.source = source
        self.records = records
        self.first_id = first_id
        self.last_id = last_id

    def __repr__(self) -> str:
        return f"Trigger({self.kind!r}, source={self.source!r}, records={self.records!r})"

    @property
    def retrying(self) -> bool:
        """True when the platform may run this event again if the invocation is deemed failed."""
        return self.kind != REQUEST

    def fields(self) -> dict[str, Any]:
        """Log fields: enough to find the batch or event, never its payload."""
        out: dict[str, Any] = {"trigger": self.kind}
        if self.source is not None:
            out["event_source"] = self.source
        if self.records is not None:
            out["records"] = self.records
        if self.first_id is not None:
            out["first_record_id"] = self.first_id
        if self.last_id is not None:
            out["last_record_id"] = self.last_id
        return out


def _dig(record: Any, path: tuple[str, ...]) -> str | None:
    for key in path:
        if not isinstance(record, dict):
            return None
        record = record.get(key)
    return record if isinstance(record, str) else None


def _count(container: Any) -> int | None:
    if isinstance(container, list):
        return len(container)
    if isinstance(container, dict):  # Kafka: {"topic-partition": [records]}
        return sum(len(v) for v in container.values() if isinstance(v, list))
    return None


def classify(event: Any) -> Trigger:
    """Tell a request from a retried batch or asynchronous event. Never raises."""
    if not isinstance(event, dict):
        return Trigger(REQUEST)
    records = event.get("Records")
    if isinstance(records, list) and records and isinstance(records[0], dict):
        first = records[0]
        source = first.get("eventSource") or first.get("EventSource")
        # Any Records-shaped event comes from a service, not a caller waiting on it.
        kind, path = _RECORD_SOURCES.get(str(source), (ASYNC, ()))
        last = records[-1]
        return Trigger(
            kind,
            str(source) if source is not None else None,
            len(records),
            _dig(first, path) if path else None,
            _dig(last, path) if path else None,
        )
    source = event.get("eventSource")
    if isinstance(source, str) and source in _BATCH_SOURCES:
        return Trigger(BATCH, source, _count(event.get(_BATCH_SOURCES[source])))
    if "detail-type" in event and "source" in event:
        event_id = event.get("id")
        return Trigger(ASYNC, "aws:events", None, event_id if isinstance(event_id, str) else None)
    if "awslogs" in event:
        return Trigger(ASYNC, "aws:logs")
    return Trigger(REQUEST)
