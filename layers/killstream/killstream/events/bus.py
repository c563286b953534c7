"""PutEvents onto the killmail bus within EventBridge's limits: at most 10 entries a call and
256 KB in all, counted as AWS counts an entry's size (docs/protocols.md, "AWS limits"), with
the result of every entry (a call can succeed while some of its entries fail)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from killstream.batching import calls
from killstream.events.detail import SOURCE, KillmailEvent
from killstream.observability import logger

MAX_ENTRIES = 10
MAX_BYTES = 256 * 1024
# A PutEvents that hangs must not eat the fetcher's invocation: short timeouts, one retry (the
# message's redelivery is the real retry).
AWS_CLIENT_CONFIG = Config(connect_timeout=2, read_timeout=4, retries={"mode": "standard", "max_attempts": 2})


def entry_bytes(entry: dict[str, Any]) -> int:
    """An entry's size as EventBridge counts it: Source, DetailType, Detail and each resource,
    in UTF-8 bytes, plus 14 for a Time."""
    size = sum(len(entry.get(key, "").encode()) for key in ("Source", "DetailType", "Detail"))
    size += sum(len(resource.encode()) for resource in entry.get("Resources", ()))
    return size + (14 if "Time" in entry else 0)


class EventBus:
    """`put(events)` → for each event, None when the bus took it, else why not."""

    def __init__(self, name: str, client: Any = None):
        self.name = name
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = boto3.client("events", config=AWS_CLIENT_CONFIG)
        return self._client

    def entry(self, event: KillmailEvent) -> dict[str, Any]:
        return {
            "Source": SOURCE,
            "DetailType": event.detail_type,
            "Detail": event.detail_json,
            "EventBusName": self.name,
        }

    def put(self, events: Sequence[KillmailEvent]) -> list[str | None]:
        refused: list[str | None] = [None] * len(events)
        numbered = [(n, self.entry(event)) for n, event in enumerate(events)]
        for call in calls(numbered, lambda item: entry_bytes(item[1]), max_entries=MAX_ENTRIES, max_bytes=MAX_BYTES):
            try:
                answer = self.client.put_events(Entries=[entry for _, entry in call])
            except (BotoCoreError, ClientError) as exc:
                logger.warning("PutEvents failed", extra={"error": str(exc), "events": len(call)})
                for n, _ in call:
                    refused[n] = f"PutEvents failed: {exc}"
                continue
            # Entries come back in the order sent; a failed one carries ErrorCode/ErrorMessage.
            for (n, _), result in zip(call, answer.get("Entries", []), strict=False):
                if result.get("ErrorCode"):
                    refused[n] = f"{result['ErrorCode']}: {result.get('ErrorMessage', '')}".strip()
            for n, _ in call[len(answer.get("Entries", [])) :]:
                refused[n] = "PutEvents answered without this entry"
        return refused
