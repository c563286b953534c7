"""The SQS event source's side of a queue's handler (the fetcher's, the notifier's): the batch's
records as Messages, and the partial batch response.

Powertools' BatchProcessor is built around a handler per record, but these batches are worth more
processed as a whole (one stored-ids query and one write; posts paced against each other), so the
whole batch is processed first and the per-record handler then only reports that message's
result: it raises for the records SQS must redeliver, which BatchProcessor turns into
`batchItemFailures`. That keeps to Powertools' public API — no subclass reaching into its
internals — and BatchProcessor still owns the response format."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from killstream.fetcher.messages import Message

# A batch whose every record must be retried (database down, webhook unreachable) is reported
# record by record like any other instead of raising BatchProcessingError: SQS redelivers the
# same messages either way, and the invocation still ends normally with its metrics and lines.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


class Result(Protocol):
    @property
    def retry(self) -> bool: ...

    @property
    def error(self) -> Exception | None: ...


def messages(event: Mapping[str, Any]) -> list[Message]:
    return [Message.from_sqs_record(record) for record in event["Records"]]


def partial_response(event: dict, context: Any, results: Mapping[str, Result]) -> PartialItemFailureResponse:
    """`batchItemFailures` for the messages whose result says retry."""

    def report(record: SQSRecord) -> None:
        result = results[record.message_id]
        if result.retry:
            raise result.error if result.error is not None else RuntimeError(f"{record.message_id}: retry")

    return process_partial_response(event=event, record_handler=report, processor=processor, context=context)
