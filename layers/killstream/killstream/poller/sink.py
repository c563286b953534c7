"""Packages onto SQS with SendMessageBatch, within SQS's limits (killstream.sqs_limits), sent
within `flush_within` seconds of arriving, failed entries retried while there is time for another
call, and a report of what SQS took so the cursor moves only past accepted packages."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from killstream import aws_clients, sqs_limits
from killstream.observability import logger
from killstream.package import Package

SEND_ATTEMPTS = 4
RETRY_BACKOFF = 0.2


@dataclass
class SendReport:
    accepted: list[Package] = field(default_factory=list)
    failed: list[Package] = field(default_factory=list)
    """SQS did not take them after every attempt: they must be sent again."""
    dropped: list[Package] = field(default_factory=list)
    """Too large for SQS even without `esi`: they can never be sent (logged in full)."""
    esi_dropped: int = 0

    def add(self, other: SendReport) -> None:
        self.accepted += other.accepted
        self.failed += other.failed
        self.dropped += other.dropped
        self.esi_dropped += other.esi_dropped


@dataclass(frozen=True)
class _Entry:
    package: Package
    body: str
    attributes: dict
    size: int


class SqsSink:
    """`time_left()` says how many seconds sending may still take (the tick sets it); a call
    is made only while one call's longest, `call_seconds`, fits in it."""

    def __init__(
        self,
        client: Any,
        queue_url: str,
        *,
        flush_within: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        attempts: int = SEND_ATTEMPTS,
        call_seconds: float = aws_clients.CALL_SECONDS,
    ):
        self.client = client
        self.queue_url = queue_url
        self.flush_within = flush_within
        self.clock = clock
        self.sleep = sleep
        self.attempts = attempts
        self.call_seconds = call_seconds
        self.time_left: Callable[[], float] = lambda: math.inf
        self._pending: list[_Entry] = []
        self._pending_bytes = 0
        self._oldest: float | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def due_at(self) -> float | None:
        """When the oldest waiting package must be on its way (None: nothing waits)."""
        return None if self._oldest is None else self._oldest + self.flush_within

    def add(self, package: Package) -> SendReport:
        """Queue a package; a batch that is full (entries or bytes) is sent at once."""
        report = SendReport()
        entry = self._entry(package, report)
        if entry is None:
            return report
        if self._pending_bytes + entry.size > sqs_limits.MAX_BYTES:
            report.add(self.flush())
        self._pending.append(entry)
        self._pending_bytes += entry.size
        if self._oldest is None:
            self._oldest = self.clock()
        if len(self._pending) >= sqs_limits.MAX_ENTRIES:
            report.add(self.flush())
        return report

    def flush(self) -> SendReport:
        entries, self._pending, self._pending_bytes, self._oldest = self._pending, [], 0, None
        report = SendReport()
        if entries:
            report.accepted, report.failed = self._send(entries)
        return report

    def _entry(self, package: Package, report: SendReport) -> _Entry | None:
        attributes = {
            "source": {"DataType": "String", "StringValue": package.source},
            "killmail_id": {"DataType": "Number", "StringValue": str(package.killmail_id)},
        }
        body = package.to_body()
        size = _size(body, attributes)
        if size > sqs_limits.MAX_MESSAGE_BYTES and package.esi is not None:
            # The fetcher gets the killmail from ESI when `esi` is absent.
            body = package.to_body(with_esi=False)
            size = _size(body, attributes)
            report.esi_dropped += 1
            logger.warning(
                "package too large for SQS: sent without esi", extra={"killmail_id": package.killmail_id, "bytes": size}
            )
        if size > sqs_limits.MAX_MESSAGE_BYTES:
            report.dropped.append(package)
            logger.error(
                "package too large for SQS even without esi: not enqueued",
                extra={"killmail_id": package.killmail_id, "bytes": size, "package": body},
            )
            return None
        return _Entry(package, body, attributes, size)

    def _send(self, entries: list[_Entry]) -> tuple[list[Package], list[Package]]:
        accepted: list[Package] = []
        waiting = entries
        made = 0
        for attempt in range(self.attempts):
            backoff = RETRY_BACKOFF * 2 ** (attempt - 1) if attempt else 0.0
            if self.time_left() < backoff + self.call_seconds:
                break  # another call could outlive the time left: what is left unsent is failed
            if backoff:
                self.sleep(backoff)
            made += 1
            taken = self._send_once(waiting)
            accepted += [entry.package for index, entry in enumerate(waiting) if index in taken]
            waiting = [entry for index, entry in enumerate(waiting) if index not in taken]
            if not waiting:
                break
        for entry in waiting:
            # Logged whole: for RedisQ, whose reads are destructive, this line is the only copy left.
            logger.error(
                "SQS would not take package after every attempt",
                extra={
                    "killmail_id": entry.package.killmail_id,
                    "attempts": made,
                    "package": entry.body,
                    "why": "no attempt left" if made == self.attempts else "no time left for another attempt",
                },
            )
        return accepted, [entry.package for entry in waiting]

    def _send_once(self, entries: list[_Entry]) -> set[int]:
        """Indexes of the entries SQS accepted."""
        try:
            response = self.client.send_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(index), "MessageBody": entry.body, "MessageAttributes": entry.attributes}
                    for index, entry in enumerate(entries)
                ],
            )
        except (BotoCoreError, ClientError) as error:
            logger.warning("SendMessageBatch failed", extra={"error": str(error), "entries": len(entries)})
            return set()
        for failure in response.get("Failed", []):
            entry = entries[int(failure["Id"])]
            logger.warning(
                "SQS refused an entry",
                extra={
                    "killmail_id": entry.package.killmail_id,
                    "code": failure.get("Code"),
                    "reason": failure.get("Message"),
                    "sender_fault": failure.get("SenderFault"),
                },
            )
        return {int(success["Id"]) for success in response.get("Successful", [])}


def _size(body: str, attributes: dict) -> int:
    return sqs_limits.entry_bytes({"MessageBody": body, "MessageAttributes": attributes})
