"""Notifier Lambda: an SQS batch of alerts (killmail events an EventBridge rule matched) →
posted to the Discord or Slack webhook whose URL is in the secret WEBHOOK_SECRET_ARN.

All the work is in killstream.alerts. As the fetcher does, the whole batch is processed first
(posts are paced against each other), then Powertools' BatchProcessor reports each record:
the per-record handler raises for the alerts SQS must redeliver."""

from functools import cache

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from killstream.alerts.notifier import Notifier
from killstream.config import NotifierConfig
from killstream.fetcher.messages import Message
from killstream.observability import logger, metrics

processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@cache
def notifier() -> Notifier:
    """Built on the first invocation, not at import (a bad variable then fails the invocation
    with a message naming it), and kept with its session for the next ones."""
    return Notifier.from_config(NotifierConfig.from_env())


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event, context):
    messages = [Message.from_sqs_record(record) for record in event["Records"]]
    results = notifier().process(messages, time_left=context.get_remaining_time_in_millis() / 1000)

    def report(record: SQSRecord) -> None:
        result = results[record.message_id]
        if result.retry:
            raise result.error if result.error is not None else RuntimeError(f"{record.message_id}: retry")

    return process_partial_response(event=event, record_handler=report, processor=processor, context=context)
