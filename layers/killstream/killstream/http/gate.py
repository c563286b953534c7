"""The gate every request and every wait of a poller tick passes through: pacing, the tick's
limits, and the memory of a refusal. Only that: what the tick counts lives in
killstream.poller.counts."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from killstream.errors import BUDGET, REMAINING_TIME, SOURCE_REFUSED, StopTick
from killstream.observability import logger

SLEEP_SLICE = 1.0


def _never() -> float:
    return math.inf


@dataclass(frozen=True)
class Limits:
    """A tick's limits, as times on the gate's clock (asked again before every request).

    - `budget_end`: new work starts only before it (the tick's budget; a stop asked for from
      outside, such as Ctrl+C, ends it at once).
    - `hard_end`: every request must be over by it, past the budget too (the Lambda's remaining
      time, less what finishing the tick needs).
    - `new_work`: the seconds a new unit of work needs before `hard_end` (RedisQ: a listen, the
      object read it may lead to; R2Z2: one request, which is cut at `hard_end` if need be).
    - `finishing`: the seconds a request that must finish (reading a package RedisQ already
      popped) needs before `hard_end`; such a request passes the budget."""

    budget_end: Callable[[], float] = field(default=_never)
    hard_end: Callable[[], float] = field(default=_never)
    new_work: float = 0.0
    finishing: float = 0.0


class Gate:
    """Requests start at most once per `pacing` seconds, measured start to start (across ticks
    too: a warm Lambda's next tick may begin right after the last one), or once per the shorter
    pacing `quicken` allows for the next one; nothing waits or starts past the tick's limits; and
    after a refusal nothing starts until it has expired."""

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
        self._next_pacing: float | None = None
        self._not_before = -math.inf
        self._refused_until = -math.inf
        self._refusal = ""
        self._limits = Limits()
        self._before_sleep: Callable[[float], None] = lambda until: None

    @property
    def last_start(self) -> float:
        """When, on `clock`, the last request was let through (-inf: none yet)."""
        return self._last_start

    def begin(self, limits: Limits, before_sleep: Callable[[float], None]) -> None:
        """Start a tick under `limits`; `before_sleep(until)` runs before any sleep, so work can
        be done instead of idling."""
        self._limits = limits
        self._before_sleep = before_sleep

    def hold(self, seconds: float) -> None:
        """No request before `seconds` from now (a protocol's wait or a backoff)."""
        self._not_before = max(self._not_before, self.clock() + seconds)

    def quicken(self, pacing_seconds: float) -> None:
        """The next request may start `pacing_seconds` after the last one (when shorter than the
        pacing): R2Z2 catching up behind the head. A hold still holds."""
        self._next_pacing = min(pacing_seconds, self.pacing)

    def refuse(self, seconds: float, why: str) -> None:
        """The source refused service: no request for `seconds`, and a tick in that time ends
        at once. Kept across ticks, as the pacing is: a warm Lambda reuses this gate."""
        self._refused_until = self.clock() + seconds
        self._refusal = why

    def refused_until(self) -> datetime | None:
        """When requests may start again after a refusal (wall clock, for people to read)."""
        left = self._refused_until - self.clock()
        return datetime.now(UTC) + timedelta(seconds=left) if left > 0 else None

    def pace(self, *, finishing: bool = False) -> float:
        """Wait until the next request may start; StopTick if it could not start in time.
        Returns the time (on `clock`) by which the request must be over. A `finishing` request
        is bound by the hard end only, not by the budget."""
        if (until := self.refused_until()) is not None:
            detail = f"not asking again before {until:%Y-%m-%dT%H:%M:%SZ}: {self._refusal}"
            logger.warning(detail, extra={"seconds_left": round(self._refused_until - self.clock())})
            raise StopTick(SOURCE_REFUSED, detail)
        pacing = self.pacing if self._next_pacing is None else self._next_pacing
        start_at = max(self._last_start + pacing, self._not_before, self.clock())
        self._refuse_past_limits(start_at, finishing)
        if start_at > self.clock():
            self._before_sleep(start_at)
        # In slices: the limits can move closer while we wait (a stop asked for from outside).
        while (delay := start_at - self.clock()) > 0:
            self._refuse_past_limits(start_at, finishing)
            self.sleep(min(delay, SLEEP_SLICE))
        self._refuse_past_limits(self.clock(), finishing)
        self._last_start = self.clock()
        self._next_pacing = None
        self.started += 1
        return self._limits.hard_end()

    def _refuse_past_limits(self, start_at: float, finishing: bool) -> None:
        limits = self._limits
        if not finishing and start_at >= limits.budget_end():
            raise StopTick(BUDGET)
        if start_at + (limits.finishing if finishing else limits.new_work) >= limits.hard_end():
            raise StopTick(REMAINING_TIME)
