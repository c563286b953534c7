"""Fetcher Lambda: an SQS batch of packages → their killmails in PostgreSQL.

All the work is in the killstream.fetcher package. Powertools' BatchProcessor is built around a handler per
record, but this batch is worth more processed as a whole (one stored-ids query, ESI fetched in
parallel, one write), so the whole batch is processed first and the per-record handler then only
reports that message's result: it raises for the records SQS must redeliver, which
BatchProcessor turns into `batchItemFailures`. That keeps to Powertools' public API — no
subclass reaching into its internals — and BatchProcessor still owns the response format."""

from functools import cache

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from killstream.config import FetcherConfig
from killstream.fetcher.batch import Fetcher
from killstream.fetcher.messages import Message
from killstream.observability import logger, metrics

# A batch whose every record must be retried (database down) is reported record by record like
# any other instead of raising BatchProcessingError: SQS redelivers the same messages either way,
# and the invocation still ends normally with its metrics and per-killmail log lines.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@cache
def fetcher() -> Fetcher:
    """Built on the first invocation, not at import (a bad variable then fails the invocation
    with a message naming it), and kept with its connections for the next ones."""
    return Fetcher.from_config(FetcherConfig.from_env())


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event, context):
    messages = [Message.from_sqs_record(record) for record in event["Records"]]
    results = fetcher().process(messages, time_left=context.get_remaining_time_in_millis() / 1000)

    def report(record: SQSRecord) -> None:
        result = results[record.message_id]
        if result.retry:
            raise result.error if result.error is not None else RuntimeError(f"{record.message_id}: retry")

    return process_partial_response(event=event, record_handler=report, processor=processor, context=context)
