"""Enricher Lambda: one scheduled run of naming the ids of the killmails stored since the last
run. All the work is in killstream.enrich; this returns the run's summary (the local runner
reads it)."""

from functools import cache

from killstream.config import EnricherConfig
from killstream.enrich.enricher import Enricher
from killstream.observability import logger, metrics


@cache
def enricher() -> Enricher:
    """Built on the first invocation, not at import (a bad variable then fails the invocation
    with a message naming it), and kept with its connections for the next ones."""
    return Enricher.from_config(EnricherConfig.from_env())


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event, context):
    # As the poller's: Lambda's context has no stop_requested; the local runner's (Ctrl+C) has.
    stop_requested = getattr(context, "stop_requested", None)
    return enricher().run(lambda: context.get_remaining_time_in_millis() / 1000, stop_requested).as_dict()
