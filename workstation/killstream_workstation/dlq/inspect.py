"""The dead-letter queue: look at it (`killstream dlq`) and move it back (`killstream redrive`).

Messages reach the DLQ two ways:
- permanent failures: the fetcher sends the package itself, with message attributes
  `error_type`, `error_message`, `source` and `killmail_id`;
- transient failures: SQS moves the message after the queue's maxReceiveCount (5) receives.
  It carries no `error_type`; it is reported as `retries_exhausted`.

SQS has no peek. Inspecting a message means receiving it, which adds one to its
ApproximateReceiveCount (the count shown includes the inspection's own receive); that is
inherent to SQS and harmless here, since the DLQ has no redrive policy of its own. Inspection and
the redrive loop keep what they receive invisible for `hold_seconds` while they scan, so each
receive returns messages not yet seen, and make everything they leave behind visible again
(visibility 0) when they finish, error or not. A run that is killed leaves those messages
invisible until the hold expires.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from killstream.fetcher.dead_letters import ERROR_MESSAGE, ERROR_TYPE

RETRIES_EXHAUSTED = "retries_exhausted"
"""The error_type of a message SQS moved itself after maxReceiveCount: it carries none."""
HOLD_SECONDS = 60


@dataclass(frozen=True)
class DlqMessage:
    message_id: str
    killmail_id: int | None
    error_type: str
    error_message: str | None
    receive_count: int | None


@dataclass(frozen=True)
class Inspection:
    dlq_url: str
    approximate_visible: int
    approximate_in_flight: int
    messages: tuple[DlqMessage, ...]
    counts: dict[str, int]
    limited: bool


def describe(message: dict) -> DlqMessage:
    """What a received DLQ message says about its killmail and why it failed."""
    attributes = message.get("MessageAttributes") or {}
    error_type = _attribute(attributes, ERROR_TYPE) or RETRIES_EXHAUSTED
    killmail_id = as_int(_attribute(attributes, "killmail_id"))
    if killmail_id is None:
        try:
            body = json.loads(message.get("Body") or "")
        except ValueError:
            body = None
        if isinstance(body, dict):  # a package, or an alert (an EventBridge event: its detail's)
            detail = body.get("detail")
            killmail_id = as_int(body.get("killmail_id"))
            if killmail_id is None and isinstance(detail, dict):
                killmail_id = as_int(detail.get("killmail_id"))
    receive_count = as_int((message.get("Attributes") or {}).get("ApproximateReceiveCount"))
    return DlqMessage(
        message["MessageId"], killmail_id, error_type, _attribute(attributes, ERROR_MESSAGE), receive_count
    )


def _attribute(attributes: dict, name: str) -> str | None:
    return (attributes.get(name) or {}).get("StringValue")


def as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class Scan:
    """Receives every message of a queue once, holding each invisible until it is settled
    (deleted) or the scan is released."""

    def __init__(self, sqs, url: str, *, hold_seconds: int, wait_seconds: int):
        self.sqs = sqs
        self.url = url
        self.hold_seconds = hold_seconds
        self.wait_seconds = wait_seconds
        self.seen: set[str] = set()
        self.held: dict[str, str] = {}

    def batches(self, limit: int | None = None) -> Iterator[list[dict]]:
        while limit is None or len(self.seen) < limit:
            wanted = 10 if limit is None else min(10, limit - len(self.seen))
            messages = self.sqs.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=wanted,
                VisibilityTimeout=self.hold_seconds,
                # Long polling asks every SQS server; a short poll may answer empty while messages remain.
                WaitTimeSeconds=self.wait_seconds,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            ).get("Messages", [])
            fresh = []
            for message in messages:
                message_id = message["MessageId"]
                # A message whose hold expired comes back with a new receipt handle; only the newest works.
                self.held[message_id] = message["ReceiptHandle"]
                if message_id not in self.seen:
                    self.seen.add(message_id)
                    fresh.append(message)
            if not fresh:
                return
            yield fresh

    def settle(self, message_id: str) -> None:
        self.held.pop(message_id, None)

    def release(self) -> None:
        handles = list(self.held.values())
        for start in range(0, len(handles), 10):
            # A release that fails only delays visibility until the hold expires.
            self.sqs.change_message_visibility_batch(
                QueueUrl=self.url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
                    for i, h in enumerate(handles[start : start + 10])
                ],
            )
        self.held.clear()


def inspect_dlq(
    sqs, dlq_url: str, *, limit: int | None = None, hold_seconds: int = HOLD_SECONDS, wait_seconds: int = 1
) -> Inspection:
    """Counts by error_type and one line per message, leaving every message in the DLQ, visible.
    Each inspected message's ApproximateReceiveCount goes up by one: SQS has no peek."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=dlq_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    scan = Scan(sqs, dlq_url, hold_seconds=hold_seconds, wait_seconds=wait_seconds)
    messages: list[DlqMessage] = []
    try:
        for batch in scan.batches(limit):
            messages.extend(describe(m) for m in batch)
    finally:
        scan.release()
    return Inspection(
        dlq_url=dlq_url,
        approximate_visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
        approximate_in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        messages=tuple(messages),
        counts=dict(Counter(m.error_type for m in messages).most_common()),
        limited=limit is not None and len(messages) >= limit,
    )
