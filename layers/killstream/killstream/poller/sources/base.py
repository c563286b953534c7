"""What both stream sources share: the poll interface, the gate every request of a tick passes
through (pacing, deadline, counts), and the HTTP plumbing (User-Agent, timeouts, retries,
redirects, 429 backoff, refusals), written once."""

from __future__ import annotations

import json
import math
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urljoin

import requests

from killstream.observability import logger
from killstream.package import InvalidPackage, Package

CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 5.0
RETRIES = 3
RETRY_BACKOFF = 0.5
ERROR_STREAK = 5
ERROR_STREAK_BACKOFF = 5.0
RATE_LIMIT_FIRST = 5.0
RATE_LIMIT_CEILING = 60.0
UNEXPECTED_ANSWER_BACKOFF = 5.0
REFUSAL_PAUSE = 15 * 60.0
"""After a 403 (R2Z2's ban lasts about an hour, RedisQ's shutdown for good), asking again a
minute later only prolongs a ban: ticks end at once for this long."""
MAX_REDIRECTS = 5
SLEEP_SLICE = 1.0
REDIRECTS = (301, 302, 303, 307, 308)
LOGGED_TEXT = 200 * 1024  # an invalid package's raw text: under CloudWatch Logs' 256 KB an event
LOGGED_SNIPPET = 2000

# Why a tick ended, as the summary's `stopped_because` says it.
BUDGET = "budget"
REMAINING_TIME = "remaining_time"
SOURCE_REFUSED = "source_refused"
ENQUEUE_FAILED = "enqueue_failed"


class StopTick(Exception):
    """Nothing more may start this tick; `reason` is one of the constants above."""

    def __init__(self, reason: str, detail: str | None = None):
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail


TimeLeft = Callable[[], tuple[float, str]]


class Gate:
    """Every request and every wait of the poller passes here. Requests start at most once per
    `pacing` seconds, measured start to start (across ticks too: a warm Lambda's next tick may
    begin right after the last one); nothing waits or starts past the tick's deadline; and the
    tick's counts (named as the metrics) are kept here, where sources, the HTTP client and the
    poller all reach them even when a StopTick cuts a poll short."""

    def __init__(self, pacing_seconds: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.pacing = pacing_seconds
        self.clock = clock
        self.sleep = sleep
        self.counts: Counter[str] = Counter()
        self.requests = 0
        self._last_start = -math.inf
        self._not_before = -math.inf
        self._refused_until = -math.inf
        self._refusal = ""
        self._time_left: TimeLeft = lambda: (math.inf, BUDGET)
        self._before_sleep: Callable[[float], None] = lambda until: None

    def begin(self, time_left: TimeLeft, before_sleep: Callable[[float], None]) -> None:
        """Start a tick. `time_left()` is (seconds left, the limit that sets them);
        `before_sleep(until)` runs before any sleep, so work can be done instead of idling."""
        self.counts = Counter()
        self.requests = 0
        self._time_left = time_left
        self._before_sleep = before_sleep

    def count(self, name: str, value: int = 1) -> None:
        self.counts[name] += value

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
        self.requests += 1

    def _refuse_after_deadline(self, start_at: float) -> None:
        left, limit = self._time_left()
        if start_at - self.clock() >= left:
            raise StopTick(limit)


@dataclass(frozen=True)
class Reply:
    status: int
    text: str
    headers: Mapping[str, str]
    url: str


class Unreachable(Exception):
    """No usable answer after every retry (already counted and backed off)."""


class HttpClient:
    """One requests Session for a source. Network errors and 5xx are retried (RETRIES times,
    exponential backoff; after ERROR_STREAK failures in a row the backoff grows to
    ERROR_STREAK_BACKOFF); every other answer is returned as it is. Redirects are followed here."""

    def __init__(self, gate: Gate, user_agent: str, *, connect_timeout: float = CONNECT_TIMEOUT,
                 read_timeout: float = READ_TIMEOUT, retries: int = RETRIES):
        self.gate = gate
        self.timeout = (connect_timeout, read_timeout)
        self.retries = retries
        self.session = requests.Session()
        self.session.headers.update({"User-Agent": user_agent, "Accept": "application/json"})
        self._failures_in_a_row = 0

    @property
    def longest_request(self) -> float:
        """The longest one attempt can take before its timeouts end it."""
        return sum(self.timeout)

    def get(self, url: str, params: Mapping[str, object] | None = None, *,
            follow_redirects: bool = True) -> Reply:
        """Each attempt, a redirect's included, is a request of its own through the gate."""
        reply = self._attempt_all(url, params)
        for _ in range(MAX_REDIRECTS if follow_redirects else 0):
            location = redirect_location(reply)
            if location is None:
                break
            reply = self._attempt_all(location, None)
        return reply

    def _attempt_all(self, url: str, params: Mapping[str, object] | None) -> Reply:
        problem = ""
        for attempt in range(self.retries + 1):
            self.gate.pace()
            try:
                response = self.session.get(url, params=params, timeout=self.timeout, allow_redirects=False)
            except requests.RequestException as error:
                problem = f"{type(error).__name__}: {error}"
            else:
                if response.status_code < 500:
                    self._failures_in_a_row = 0
                    return Reply(response.status_code, response.text, response.headers, response.url)
                problem = f"HTTP {response.status_code}"
            self._failures_in_a_row += 1
            self.gate.count("SourceErrors")
            backoff = (ERROR_STREAK_BACKOFF if self._failures_in_a_row >= ERROR_STREAK
                       else RETRY_BACKOFF * 2 ** attempt)
            self.gate.hold(backoff)
            logger.warning("request failed", extra={"url": url, "problem": problem, "attempt": attempt + 1,
                                                    "failures_in_a_row": self._failures_in_a_row,
                                                    "backoff_seconds": backoff})
        raise Unreachable(problem)


class RateLimitBackoff:
    """429: honour Retry-After (in seconds) when given, else wait 5 s, doubling to 60 s."""

    def __init__(self) -> None:
        self._next = RATE_LIMIT_FIRST

    def wait(self, retry_after: str | None) -> float:
        exponential = self._next
        self._next = min(self._next * 2, RATE_LIMIT_CEILING)
        try:
            given = float(retry_after) if retry_after is not None else math.nan
        except ValueError:
            given = math.nan
        return given if given >= 0 else exponential

    def reset(self) -> None:
        self._next = RATE_LIMIT_FIRST


@dataclass
class PollResult:
    """What one poll yielded. `through` is the stream position this poll settled (R2Z2's
    sequence; None for streams without one): the cursor may move there once SQS has accepted
    `packages`."""
    packages: list[Package] = field(default_factory=list)
    through: int | None = None


class Source(ABC):
    """A live feed. `poll()` makes the next request(s), counts what happened on the gate and
    returns the packages; it raises StopTick when the tick must end (deadline, refusal)."""

    name: str
    title: str
    flush_within: float
    """How long a received package may wait in the SQS sink for others to share its batch."""

    def __init__(self, client: HttpClient):
        self.client = client
        self.gate = client.gate
        self._rate_limit = RateLimitBackoff()

    @property
    def longest_request(self) -> float:
        return self.client.longest_request

    def start(self, cursor: int | None) -> None:
        """A tick begins at the durable cursor (None: there is none)."""

    def lag(self, cursor: int | None) -> int | None:
        """How far the cursor is behind the feed, where the source can tell."""
        return None

    @abstractmethod
    def poll(self) -> PollResult: ...

    def _get(self, url: str, params: Mapping[str, object] | None = None, *,
             follow_redirects: bool = True) -> Reply | None:
        """The answer, or None when there is none to read this time (already counted and backed
        off: network trouble, 5xx after retries, 429). A 403 ends the tick."""
        try:
            reply = self.client.get(url, params, follow_redirects=follow_redirects)
        except Unreachable:
            return None
        if self._rate_limited(reply):
            return None
        self._stop_if_refused(reply)
        return reply

    def _rate_limited(self, reply: Reply) -> bool:
        """A 429: counted, and the backoff held on the gate."""
        if reply.status != 429:
            self._rate_limit.reset()
            return False
        wait = self._rate_limit.wait(reply.headers.get("Retry-After"))
        self.gate.count("RateLimited")
        self.gate.hold(wait)
        logger.warning(f"{self.title} rate limited us (429)", extra={"url": reply.url, "wait_seconds": wait})
        return True

    def _stop_if_refused(self, reply: Reply) -> None:
        if reply.status == 403:
            # A ban or a refusal, not a blip: asking again, even next tick, would only prolong it.
            message = f"{self.title} refuses service: {answer_message(reply)}"
            self.gate.refuse(REFUSAL_PAUSE, message)
            self._refuse(message)

    def _refuse(self, message: str) -> None:
        until = self.gate.refused_until()
        logger.error(message, extra={"not_asking_before": f"{until:%Y-%m-%dT%H:%M:%SZ}"} if until else {})
        self.gate.count("SourceRefused")
        raise StopTick(SOURCE_REFUSED, message)

    def _unexpected(self, reply: Reply) -> PollResult:
        self.gate.count("SourceErrors")
        self.gate.hold(UNEXPECTED_ANSWER_BACKOFF)
        logger.warning(f"unexpected answer from {self.title}",
                       extra={"url": reply.url, "status": reply.status, "body": reply.text[:LOGGED_SNIPPET]})
        return PollResult()

    def _invalid(self, error: InvalidPackage, **where: object) -> None:
        self.gate.count("InvalidPackages")
        logger.warning(f"invalid package: {error.reason}", extra={"raw": (error.raw or "")[:LOGGED_TEXT], **where})


def redirect_location(reply: Reply) -> str | None:
    """Where a redirect points (absolute), or None when the reply is not one."""
    location = reply.headers.get("Location")
    if reply.status not in REDIRECTS or not location:
        return None
    return urljoin(reply.url, location)


def answer_message(reply: Reply) -> str:
    """A refusal's own words: RedisQ's JSON `message`, else the start of the body."""
    try:
        doc = json.loads(reply.text)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("message"), str):
        return doc["message"]
    return f"HTTP {reply.status} {reply.text.strip()[:500]}".strip()
