"""What a processed batch tells: one log line per message (the `outcome` the console and the
Logs Insights queries read; a stored killmail's line also carries the ids a reader names it by:
victim, ship, system) and the batch's metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from killstream.fetcher.messages import Disposition, Item, MessageResult, Stored, Work
from killstream.killmail import Killmail
from killstream.observability import Metric, MetricUnit, logger, metrics

# The one place the queue's word becomes a metric.
DISPOSITION_METRICS = {
    Disposition.SAVED: Metric.KILLMAILS_STORED,
    Disposition.SKIPPED: Metric.KILLMAILS_DUPLICATE,
    Disposition.UPDATED: Metric.ZKB_UPDATED,
    Disposition.DEAD_LETTERED: Metric.PERMANENT_FAILURES,
    Disposition.RETRY: Metric.TRANSIENT_FAILURES,
}


def report_batch(
    batch: Sequence[Work],
    results: Mapping[str, MessageResult],
    esi_counts: Mapping[str, int],
    write_ms: float | None,
    stored_at: datetime,
) -> None:
    for work in batch:
        result = results[work.message.message_id]
        keys = {"killmail_id": result.killmail_id, "total_value": work.total_value}
        if isinstance(work, Item) and isinstance(work.stage, Stored):
            keys |= _who_and_where(work.stage.killmail)
        if result.error is None:
            logger.info(
                f"{result.disposition.value} {result.killmail_id}", extra={**keys, "outcome": result.disposition.value}
            )
        else:
            logger.warning(
                f"failed {result.killmail_id or 'message'}: {result.error.message}",
                extra={
                    **keys,
                    "outcome": "failed",
                    "reason": result.error.message,
                    "error_type": result.error.error_type,
                    "retry": result.retry,
                    "message_id": work.message.message_id,
                },
            )
        if result.disposition is Disposition.SAVED and isinstance(work, Item) and isinstance(work.stage, Stored):
            lag = (stored_at - work.stage.killmail.killmail_time).total_seconds()
            metrics.add_metric(name=Metric.INGEST_LAG_SECONDS, unit=MetricUnit.Seconds, value=max(0.0, lag))
    dispositions = [result.disposition for result in results.values()]
    for disposition, name in DISPOSITION_METRICS.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=dispositions.count(disposition))
    metrics.add_metric(name=Metric.ESI_FETCHES, unit=MetricUnit.Count, value=esi_counts["requests"])
    metrics.add_metric(name=Metric.ESI_ERRORS, unit=MetricUnit.Count, value=esi_counts["errors"])
    metrics.add_metric(name=Metric.ESI_RATE_LIMITED, unit=MetricUnit.Count, value=esi_counts["rate_limited"])
    if write_ms is not None:
        metrics.add_metric(name=Metric.DB_WRITE_MS, unit=MetricUnit.Milliseconds, value=write_ms)


def _who_and_where(killmail: Killmail) -> dict[str, int | None]:
    """The killmail's ids the console names it by (its names come later, from the enricher)."""
    return {
        "victim_ship_type_id": killmail.victim_ship_type_id,
        "victim_character_id": killmail.victim_character_id,
        "victim_corporation_id": killmail.victim_corporation_id,
        "solar_system_id": killmail.solar_system_id,
    }
