"""The fetcher's dead-letter sender: permanent failures go to the DLQ with their reason, as
SendMessageBatch calls within SQS's limits. The operator's side (inspect, redrive) is the
workstation's `killstream dlq` / `killstream redrive`, which reads the attributes written here."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from killstream import sqs_limits
from killstream.errors import FetchError
from killstream.fetcher.messages import ERROR_MESSAGE_CHARS, Message
from killstream.observability import logger
from killstream.package import Package

# Message attributes of a dead letter. A message SQS itself moved after maxReceiveCount has none.
ERROR_TYPE = "error_type"
ERROR_MESSAGE = "error_message"
FAILURE_ATTRIBUTES = (ERROR_TYPE, ERROR_MESSAGE)

AWS_CLIENT_CONFIG = Config(connect_timeout=3, read_timeout=5, retries={"mode": "standard", "max_attempts": 3})


@dataclass(frozen=True)
class DeadLetter:
    message: Message
    error: FetchError
    package: Package | None = None
    """The package, when the body was one: its source and killmail id go along as attributes."""
    killmail_id: int | None = None
    """The killmail a body that is no package is about (an alert's), as the attribute."""


class DeadLetterQueue:
    """Sends permanent failures to the DLQ: the original body, with message attributes
    `error_type`, `error_message`, and `source` / `killmail_id` when known."""

    def __init__(self, queue_url: str, client: Any = None):
        self.queue_url = queue_url
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = boto3.client("sqs", config=AWS_CLIENT_CONFIG)
        return self._client

    def send(self, letters: Sequence[DeadLetter]) -> set[str]:
        """Returns the message ids the DLQ did not accept."""
        failed: set[str] = set()
        for chunk in chunks([(letter.message.message_id, entry(letter)) for letter in letters]):
            entries = [dict(entry, Id=str(n)) for n, (_, entry) in enumerate(chunk)]
            try:
                answer = self.client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except (BotoCoreError, ClientError) as exc:
                logger.error("DLQ send failed", extra={"error": str(exc), "messages": len(chunk)})
                failed.update(message_id for message_id, _ in chunk)
                continue
            for refused in answer.get("Failed", []):
                message_id = chunk[int(refused["Id"])][0]
                logger.error(
                    "DLQ refused a message",
                    extra={"message_id": message_id, "error": refused.get("Message", refused.get("Code"))},
                )
                failed.add(message_id)
        return failed


def entry(letter: DeadLetter) -> dict:
    """A SendMessageBatch entry (without its Id) for one dead letter: the body as it came, with
    the reason as attributes. A DLQ entry always keeps its reason: when body and attributes would
    exceed SQS's message limit, the body goes without its `esi` (a redrive then has the fetcher
    ask ESI), and a body that is no package is cut."""
    error = letter.error
    attributes = {
        ERROR_TYPE: {"DataType": "String", "StringValue": error.error_type},
        ERROR_MESSAGE: {
            "DataType": "String",
            "StringValue": (error.message or error.error_type)[:ERROR_MESSAGE_CHARS],
        },
    }
    if letter.package is not None:
        attributes["source"] = {"DataType": "String", "StringValue": letter.package.source}
        attributes["killmail_id"] = {"DataType": "Number", "StringValue": str(letter.package.killmail_id)}
    elif letter.killmail_id is not None:
        attributes["killmail_id"] = {"DataType": "Number", "StringValue": str(letter.killmail_id)}
    entry = {"MessageBody": letter.message.body, "MessageAttributes": attributes}
    room = sqs_limits.MAX_MESSAGE_BYTES - sqs_limits.entry_bytes(entry | {"MessageBody": ""})
    if sqs_limits.entry_bytes(entry) > sqs_limits.MAX_MESSAGE_BYTES:
        entry["MessageBody"] = _within(letter.message.body, room)
    return entry


def _within(body: str, room: int) -> str:
    """`body` in at most `room` bytes: without `esi` when it is a package, else cut."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        doc = None
    if isinstance(doc, dict) and "esi" in doc:
        smaller = json.dumps({key: value for key, value in doc.items() if key != "esi"})
        if len(smaller.encode()) <= room:
            return smaller
    return body.encode()[:room].decode(errors="ignore")


def chunks(entries: list[tuple[str, dict]]) -> Iterable[list[tuple[str, dict]]]:
    """(message id, entry) pairs in SendMessageBatch calls: the id names what each entry carries."""
    return sqs_limits.batches(entries, entry=lambda item: item[1])
