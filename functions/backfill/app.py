"""Backfill Lambda: the steps of the backfill state machine (statemachine/backfill.asl.json). All
the work is in killstream.backfill; this reads the event and returns its result.

- {"action": "plan", "input": {...}}: the execution's input → {"days": [{"day", "expected"}...],
  "source": ...}, the archive's totals read once for the range (expected null: not counted).
- {"action": "day", "day": "YYYY-MM-DD", "expected": n, "source": "everef"}: that day backfilled
  → its result.
  A day whose archive could not be read raises BackfillDayFailed, so the state machine tries it
  again with backoff; a day read whole is its result, complete or not (what failed is settled).
- {"action": "failed", "day": ..., "source": ..., "error": {...}}: the retries are spent: the
  day's error result, counted once as BackfillDaysFailed."""

from datetime import UTC, date, datetime
from functools import cache

from killstream.backfill.days import Backfill, DayStatus, publish, record_failed_day
from killstream.backfill.plan import plan
from killstream.config import BackfillConfig
from killstream.errors import ConfigError
from killstream.observability import logger, metrics

STOP_MS = 60_000
"""No day starts with less time left than this (a day takes about a minute: README, Backfill)."""


class BackfillDayFailed(Exception):
    """The day's archive could not be read (whole, or at all): worth another try."""


@cache
def config() -> BackfillConfig:
    try:
        return BackfillConfig.from_env()
    except ConfigError as error:
        logger.error(f"bad configuration: {error}", extra={"variable": error.variable})
        raise


@cache
def backfill(source: str) -> Backfill:
    """Built on the first invocation for that archive, not at import, and kept with its connection."""
    return Backfill.from_config(config(), source, parallel=1)


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event, context):
    action = event.get("action") if isinstance(event, dict) else None
    if action == "plan":
        days, source = plan(event.get("input"), datetime.now(UTC).date())
        totals, problem = backfill(source).totals()  # once for the range, not once a day
        logger.info(
            f"backfill of {len(days)} day(s) from {source}",
            extra={"first": f"{days[0]}", "last": f"{days[-1]}", "totals_problem": problem},
        )
        counts = totals or {}
        return {"days": [{"day": f"{day}", "expected": counts.get(day)} for day in days], "source": source}
    if action == "failed":
        return record_failed_day(event.get("day"), event.get("source"), event.get("error"))
    if action != "day":
        raise ValueError(f"unknown action {action!r}: plan, day or failed")
    day = date.fromisoformat(event["day"])
    expected = event.get("expected")  # the plan step's count: no totals.json request a day
    report = backfill(event["source"]).run(
        [day],
        totals={} if expected is None else {day: int(expected)},
        should_stop=lambda: "remaining_time" if context.get_remaining_time_in_millis() < STOP_MS else None,
    )
    publish(report, errors_retried=True)
    if not report.days:
        raise BackfillDayFailed(f"{event['day']}: not started ({report.stopped_because})")
    (result,) = report.days
    if result.status is DayStatus.ERROR:
        raise BackfillDayFailed(f"{result.day}: {result.error}")
    return result.summary() | {"source": event["source"]}
