"""Reconciler Lambda: once a day (EventBridge), the last RECONCILE_DAYS complete UTC days checked
against zKillboard's history and what is missing recovered. All the work is in
killstream.reconcile; this reads the window and returns the run's summary.

The scheduled event checks the default window. An invocation by hand may name days instead:
{"from": "2026-11-01", "to": "2026-11-07"} (inclusive), or {"days": 14}."""

from datetime import UTC, date, datetime
from functools import cache

from killstream.config import ReconcilerConfig
from killstream.errors import ConfigError
from killstream.observability import logger, metrics
from killstream.reconcile.reconciler import Reconciler, days_between, window


@cache
def config() -> ReconcilerConfig:
    try:
        return ReconcilerConfig.from_env()
    except ConfigError as error:
        logger.error(f"bad configuration: {error}", extra={"variable": error.variable})
        raise


@cache
def reconciler() -> Reconciler:
    """Built on the first invocation, not at import, and kept with its connections."""
    return Reconciler.from_config(config())


def days_of(event: dict, today: date) -> list[date]:
    """The days an event asks for: its "from"/"to" (inclusive), else its "days", else the window."""
    if event.get("from") or event.get("to"):
        first, last = event.get("from") or event["to"], event.get("to") or event["from"]
        return days_between(date.fromisoformat(first), date.fromisoformat(last), today)
    return window(int(event.get("days") or config().days), today)


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event, context):
    days = days_of(event if isinstance(event, dict) else {}, datetime.now(UTC).date())
    # As the poller's: Lambda's context has no stop_requested; the local runner's (Ctrl+C) has.
    report = reconciler().run(
        days,
        time_left=lambda: context.get_remaining_time_in_millis() / 1000,
        stop_requested=getattr(context, "stop_requested", None),
    )
    return report.summary()
