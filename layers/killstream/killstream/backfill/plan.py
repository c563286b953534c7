"""The backfill state machine's input turned into its days (statemachine/backfill.asl.json):
`{"from": "YYYY-MM-DD", "to": "YYYY-MM-DD", "source": "everef"}` (each optional), or nothing at
all for the last 30 complete UTC days from EVE Ref. A bad input is one `InvalidBackfillInput`
naming the field: the run fails at its first step, before any download."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from killstream.backfill.archives import EVEREF, SOURCES, ZKILLBOARD

DEFAULT_DAYS = 30
MAX_DAYS = 2_000
"""Days per execution: an inline Map keeps its history in the execution (≤ 25,000 events, about
8 a day; docs/protocols.md, "Step Functions"). All of history is four executions."""
FIRST_DAY = {EVEREF: date(2007, 12, 5), ZKILLBOARD: date(2026, 7, 1)}
"""The first day each archive has (docs/protocols.md, "EVE Ref archives", "R2Z2 history")."""


class InvalidBackfillInput(ValueError):
    """The execution's input cannot be planned; the message names the field."""


def _day(value: Any, field: str) -> date:
    if not isinstance(value, str):
        raise InvalidBackfillInput(f"{field}: must be a YYYY-MM-DD string, got {value!r:.40}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidBackfillInput(f"{field}: not a YYYY-MM-DD day: {value!r:.40}") from None


def plan(given: Any, today: date) -> tuple[list[date], str]:
    """The days (oldest first, never today or later) and the archive an input asks for."""
    given = given if isinstance(given, dict) else {}
    source = given.get("source") or EVEREF
    if source not in SOURCES:
        raise InvalidBackfillInput(f"source: one of {', '.join(SOURCES)}, got {source!r:.40}")
    yesterday = today - timedelta(days=1)
    last = _day(given["to"], "to") if given.get("to") else yesterday
    first = _day(given["from"], "from") if given.get("from") else last - timedelta(days=DEFAULT_DAYS - 1)
    if last > yesterday:
        raise InvalidBackfillInput(f"to: {last} is not a complete UTC day yet (the last is {yesterday})")
    if first > last:
        raise InvalidBackfillInput(f"from: {first} is after to: {last}")
    first = max(first, FIRST_DAY[source]) if not given.get("from") else first
    if first < FIRST_DAY[source]:
        raise InvalidBackfillInput(f"from: {source}'s archive begins on {FIRST_DAY[source]}, got {first}")
    count = (last - first).days + 1
    if count > MAX_DAYS:
        raise InvalidBackfillInput(f"{count:,} days: at most {MAX_DAYS:,} per execution; start one per range")
    return [first + timedelta(days=n) for n in range(count)], source
