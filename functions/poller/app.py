"""Poller Lambda: one scheduled tick of draining the live feed into SQS. All the work is in
killstream.poller.tick; this returns the tick's summary (the local runner reads it)."""

from functools import cache

from killstream.config import PollerConfig
from killstream.errors import ConfigError
from killstream.observability import logger, metrics
from killstream.poller.tick import Poller


@cache
def poller() -> Poller:
    """Built on the first invocation, not at import (a bad variable then fails the invocation
    with a message naming it), and kept with its connections, pacing and backoffs for the next."""
    try:
        config = PollerConfig.from_env()
    except ConfigError as error:
        logger.error(f"bad configuration: {error}", extra={"variable": error.variable})
        raise
    return Poller.from_config(config)


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event, context):
    # Lambda's context has no stop_requested: the budget and the remaining time end its ticks. The
    # local runner's has one, so Ctrl+C ends the budget while the remaining time stays real.
    return poller().tick(context.get_remaining_time_in_millis, getattr(context, "stop_requested", None))
