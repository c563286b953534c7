"""Fetcher Lambda: an SQS batch of packages → their killmails in PostgreSQL (and their events on
the bus).

All the work is in the killstream.fetcher package: the whole batch is processed at once (one
stored-ids query, ESI fetched in parallel, one write), then each record is reported for SQS
(killstream/lambda_sqs.py)."""

from functools import cache

from killstream.config import FetcherConfig
from killstream.fetcher.batch import Fetcher
from killstream.lambda_sqs import messages, partial_response
from killstream.observability import logger, metrics


@cache
def fetcher() -> Fetcher:
    """Built on the first invocation, not at import (a bad variable then fails the invocation
    with a message naming it), and kept with its connections for the next ones."""
    return Fetcher.from_config(FetcherConfig.from_env())


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event, context):
    results = fetcher().process(messages(event), time_left=context.get_remaining_time_in_millis() / 1000)
    return partial_response(event, context, results)
