"""Notifier Lambda: an SQS batch of alerts (killmail events an EventBridge rule matched) →
posted to the Discord or Slack webhook whose URL is in the secret WEBHOOK_SECRET_ARN.

All the work is in killstream.alerts: the whole batch is processed at once (posts are paced
against each other), then each record is reported for SQS (killstream/lambda_sqs.py)."""

from functools import cache

from killstream.alerts.notifier import Notifier
from killstream.config import NotifierConfig
from killstream.lambda_sqs import messages, partial_response
from killstream.observability import logger, metrics


@cache
def notifier() -> Notifier:
    """Built on the first invocation, not at import (a bad variable then fails the invocation
    with a message naming it), and kept with its session for the next ones."""
    return Notifier.from_config(NotifierConfig.from_env())


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event, context):
    results = notifier().process(messages(event), time_left=context.get_remaining_time_in_millis() / 1000)
    return partial_response(event, context, results)
