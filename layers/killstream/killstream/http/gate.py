"""The gate every request and every wait of a poller tick passes through: pacing, the tick's
deadline, and the memory of a refusal. Only that: what the tick counts lives in
killstream.poller.counts."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from killstream.errors import BUDGET, SOURCE_REFUSED, StopTick
from killstream.observability import logger

SLEEP_SLICE = 1.0

TimeLeft = Callable[[], tuple[float, str]]


class Gate:
    """Requests start at most once per `pacing` seconds, measured start to start (across ticks
    too: a warm Lambda's next tick may begin right after the last one); nothing waits or starts
    past the tick's deadline; and after a refusal nothing starts until it has expired."""

    def __init__(
        self,
        pacing_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.pacing = pacing_seconds
        self.clock = clock
        self.sleep = sleep
        self.started = 0
        """Requests let through since this gate was made (a tick reads it before and after)."""
        self._last_start = -math.inf
        self._not_before = -math.inf
        self._refused_until = -math.inf
        self._refusal = ""
        self._time_left: TimeLeft = lambda: (math.inf, BUDGET)
        self._before_sleep: Callable[[float], None] = lambda until: None

    @property
    def last_start(self) -> float:
        """When, on `clock`, the last request was let through (-inf: none yet)."""
        return self._last_start

    def begin(self, time_left: TimeLeft, before_sleep: Callable[[float], None]) -> None:
        """Start a tick. `time_left()` is (seconds left, the limit that sets them);
        `before_sleep(until)` runs before any sleep, so work can be done instead of idling."""
        self._time_left = time_left
        self._before_sleep = before_sleep

    def hold(self, seconds: float) -> None:
        """No request before `seconds` from now (a protocol's wait or a backoff)."""
        self._not_before = max(self._not_before, self.clock() + seconds)

    def refuse(self, seconds: float, why: str) -> None:
        """The source refused service: no request for `seconds`, and a tick in that time ends
        at once. Kept across ticks, as the pacing is: a warm Lambda reuses this gate."""
        self._refused_until = self.clock() + seconds
        self._refusal = why

    def refused_until(self) -> datetime | None:
        """When requests may start again after a refusal (wall clock, for people to read)."""
        left = self._refused_until - self.clock()
        return datetime.now(UTC) + timedelta(seconds=left) if left > 0 else None

    def pace(self) -> None:
        """Wait until the next request may start; StopTick if it could not start in time."""
        if (until := self.refused_until()) is not None:
            detail = f"not asking again before {until:%Y-%m-%dT%H:%M:%SZ}: {self._refusal}"
            logger.warning(detail, extra={"seconds_left": round(self._refused_until - self.clock())})
            raise StopTick(SOURCE_REFUSED, detail)
        start_at = max(self._last_start + self.pacing, self._not_before, self.clock())
        self._refuse_after_deadline(start_at)
        if start_at > self.clock():
            self._before_sleep(start_at)
        # In slices: the remaining time can shrink while we wait (the local runner's shutdown).
        while (delay := start_at - self.clock()) > 0:
            self._refuse_after_deadline(start_at)
            self.sleep(min(delay, SLEEP_SLICE))
        self._refuse_after_deadline(self.clock())
        self._last_start = self.clock()
        self.started += 1

    def _refuse_after_deadline(self, start_at: float) -> None:
        left, limit = self._time_left()
        if start_at - self.clock() >= left:
            raise StopTick(limit)
