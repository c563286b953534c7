"""SendMessageBatch's limits, for everything that sends to SQS: at most 10 entries and 1 MiB in
all a call, and 1 MiB a message (AWS raised both from 256 KiB; the queues must say
MaximumMessageSize 1048576, as template.yaml does). SQS counts a message's body and, for each
message attribute, its name, DataType and value (StringValue or BinaryValue) against those bytes
(docs/protocols.md, "AWS limits")."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar, cast

from killstream.batching import calls

MAX_ENTRIES = 10
MAX_BYTES = 1024 * 1024
MAX_MESSAGE_BYTES = 1024 * 1024

T = TypeVar("T")


def entry_bytes(entry: Mapping[str, Any]) -> int:
    """The bytes SQS counts for one SendMessageBatch entry (`MessageBody`, `MessageAttributes`)."""
    size = len(entry["MessageBody"].encode())
    for name, value in (entry.get("MessageAttributes") or {}).items():
        binary = value.get("BinaryValue", b"")
        size += len(name.encode()) + len(value["DataType"].encode()) + len(value.get("StringValue", "").encode())
        # boto3 takes a str as a blob too, and sends it UTF-8 encoded.
        size += len(binary.encode() if isinstance(binary, str) else binary)
    return size


def batches(items: Iterable[T], *, entry: Callable[[T], Mapping[str, Any]] | None = None) -> Iterator[list[T]]:
    """`items` in order, split into SendMessageBatch calls; `entry` gives an item's SQS entry
    (without it, each item is one). An entry too large for any call still goes, alone, so SQS
    is the one to refuse it."""

    def size(item: T) -> int:
        return entry_bytes(entry(item) if entry else cast(Mapping[str, Any], item))

    return calls(items, size, max_entries=MAX_ENTRIES, max_bytes=MAX_BYTES)
