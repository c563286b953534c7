"""Splitting entries into calls of an AWS batch API that caps both the entries of a call and
their bytes in all (SQS SendMessageBatch, EventBridge PutEvents: docs/protocols.md, "AWS limits")."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def calls(items: Iterable[T], size: Callable[[T], int], *, max_entries: int, max_bytes: int) -> Iterator[list[T]]:
    """`items` in order, in calls of at most `max_entries` whose `size`s add up to at most
    `max_bytes`. An item too large for any call still goes, alone, so the service is the one
    to refuse it (with its own per-entry reason)."""
    batch: list[T] = []
    total = 0
    for item in items:
        item_size = size(item)
        if batch and (len(batch) == max_entries or total + item_size > max_bytes):
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += item_size
    if batch:
        yield batch
