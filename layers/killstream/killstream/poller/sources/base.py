"""The interface both live feeds implement, and what they share in reading answers: 429
backoff, refusals, unexpected answers and invalid packages, each counted and logged alike."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Self

from killstream.config import PollerConfig
from killstream.errors import SOURCE_REFUSED, InvalidPackage, StopTick
from killstream.http.client import (
    CONNECT_TIMEOUT,
    READ_TIMEOUT,
    HttpClient,
    RateLimitBackoff,
    Reply,
    Unreachable,
    answer_message,
)
from killstream.http.gate import Gate
from killstream.observability import Metric, logger
from killstream.package import Package
from killstream.poller.counts import TickCounts

UNEXPECTED_ANSWER_BACKOFF = 5.0
MIN_REQUEST_SECONDS = 1.0
"""Left before the tick's hard end, a request is worth starting; it is cut at that end."""
REFUSAL_PAUSE = 15 * 60.0
"""After a 403 (R2Z2's ban lasts about an hour, RedisQ's shutdown for good), asking again a
minute later only prolongs a ban: ticks end at once for this long."""
LOGGED_TEXT = 200 * 1024  # an invalid package's raw text: under CloudWatch Logs' 256 KB an event
LOGGED_SNIPPET = 2000


@dataclass
class PollResult:
    """What one poll yielded. `through` is the stream position this poll settled (R2Z2's
    sequence; None for streams without one): the cursor may move there once SQS has accepted
    `packages`."""

    packages: list[Package] = field(default_factory=list)
    through: int | None = None


def source_client(
    gate: Gate,
    counts: TickCounts,
    user_agent: str,
    *,
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
) -> HttpClient:
    """The HTTP client a source polls with: each failed attempt is one of the tick's SourceErrors."""
    return HttpClient(
        gate,
        user_agent,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        on_failed_attempt=lambda: counts.add(Metric.SOURCE_ERRORS),
    )


class Source(ABC):
    """A live feed. `poll()` makes the next request(s), counts what happened and returns the
    packages; it raises StopTick when the tick must end (deadline, refusal)."""

    name: str
    title: str
    flush_within: float
    """How long a received package may wait in the SQS sink for others to share its batch."""
    keeps_cursor: bool
    """Whether the stream has positions the poller keeps in the cursor parameter."""

    def __init__(self, client: HttpClient, counts: TickCounts):
        self.client = client
        self.gate = client.gate
        self.counts = counts
        self._rate_limit = RateLimitBackoff()

    @classmethod
    @abstractmethod
    def from_config(cls, config: PollerConfig, gate: Gate, counts: TickCounts) -> Self:
        """The source the configuration names, its HTTP client passing through `gate`."""

    @property
    def longest_request(self) -> float:
        return self.client.longest_request

    @property
    def new_work_seconds(self) -> float:
        """What a poll needs before the tick's hard end to be started (Limits.new_work). A request
        cut at that end loses nothing where the cursor stays before what it was reading."""
        return MIN_REQUEST_SECONDS

    @property
    def finishing_seconds(self) -> float:
        """What a request that must finish needs before the hard end (Limits.finishing)."""
        return MIN_REQUEST_SECONDS

    def start(self, cursor: int | None) -> None:  # noqa: B027  (a hook: sources without a cursor ignore it)
        """A tick begins at the durable cursor (None: there is none)."""

    def lag(self, cursor: int | None) -> int | None:
        """How far the cursor is behind the feed, where the source can tell."""
        return None

    @abstractmethod
    def poll(self) -> PollResult: ...

    def _get(
        self, url: str, params: Mapping[str, object] | None = None, *, follow_redirects: bool = True
    ) -> Reply | None:
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
        self.counts.add(Metric.RATE_LIMITED)
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
        self.counts.add(Metric.SOURCE_REFUSED)
        raise StopTick(SOURCE_REFUSED, message)

    def _unexpected(self, reply: Reply) -> PollResult:
        self.counts.add(Metric.SOURCE_ERRORS)
        self.gate.hold(UNEXPECTED_ANSWER_BACKOFF)
        logger.warning(
            f"unexpected answer from {self.title}",
            extra={"url": reply.url, "status": reply.status, "body": reply.text[:LOGGED_SNIPPET]},
        )
        return PollResult()

    def _invalid(self, error: InvalidPackage, **where: object) -> None:
        self.counts.add(Metric.INVALID_PACKAGES)
        logger.warning(f"invalid package: {error.reason}", extra={"raw": (error.raw or "")[:LOGGED_TEXT], **where})
