"""RedisQ, the stream of the original design (docs/protocols.md, "RedisQ"): one long poll per
request; reads are destructive, so a package popped is read and handed on whatever the tick's
budget says (within the Lambda's time), and one popped but never read is logged with the
address that still serves it."""

from __future__ import annotations

import json
from typing import Self
from urllib.parse import parse_qs, urlsplit

from killstream.config import PollerConfig
from killstream.errors import SOURCE_REFUSED, ConfigError, InvalidPackage, StopTick
from killstream.http.client import HttpClient, Reply, Unreachable, answer_message, redirect_location
from killstream.http.gate import Gate
from killstream.observability import Metric, logger
from killstream.package import from_redisq
from killstream.poller.counts import TickCounts
from killstream.poller.sources.base import PollResult, Source, source_client

READ_TIMEOUT_BEYOND_TTW = 5.0
"""The listen holds the request for up to ttw seconds (and a refusal comes after ~3 s): the read
timeout must outlast both, or a timed-out listen is still held by the server when the retry comes
(429), and the package it pops is lost."""
EMPTY_OBJECT = "null"
"""listen.js redirects an empty poll to /object.php?objectID=null: nothing was popped."""


def _object_id(object_url: str) -> str | None:
    values = parse_qs(urlsplit(object_url).query).get("objectID")
    return values[-1].strip() if values else None


class RedisQSource(Source):
    name = "redisq"
    title = "RedisQ"
    flush_within = 0.0
    keeps_cursor = False

    def __init__(
        self,
        client: HttpClient,
        counts: TickCounts,
        url: str,
        queue_id: str,
        ttw: int,
        package_filter: str | None = None,
    ):
        super().__init__(client, counts)
        self.url = url
        self.params: dict[str, object] = {"queueID": queue_id, "ttw": ttw}
        self.package_filter: str | None = None
        self.set_filter(package_filter)
        self._rejected_filters: dict[str, str] = {}
        """Filters RedisQ answered 400, and what was said: kept on the warm instance."""

    def set_filter(self, package_filter: str | None) -> None:
        self.package_filter = package_filter or None
        if self.package_filter:
            self.params["filter"] = self.package_filter
        else:
            self.params.pop("filter", None)

    @property
    def new_work_seconds(self) -> float:
        """A listen may pop a package, which must then be read: a listen starts only when both
        fit (the send after them is in the tick's finish reserve)."""
        return 2 * self.client.longest_request

    @property
    def finishing_seconds(self) -> float:
        """The read of a popped package: one request, whole."""
        return self.client.longest_request

    @classmethod
    def from_config(cls, config: PollerConfig, gate: Gate, counts: TickCounts) -> Self:
        if not config.redisq_queue_id:
            raise ConfigError("REDISQ_QUEUE_ID", "is required")
        client = source_client(
            gate, counts, config.user_agent, read_timeout=config.redisq_ttw + READ_TIMEOUT_BEYOND_TTW
        )
        return cls(client, counts, config.redisq_url, config.redisq_queue_id, config.redisq_ttw, config.redisq_filter)

    def poll(self) -> PollResult:
        if self.package_filter in self._rejected_filters:
            # Said once already; asking again could only get the same 400 until the filter changes.
            self.counts.add(Metric.SOURCE_REFUSED)
            raise StopTick(SOURCE_REFUSED, self._rejected_filters[self.package_filter])
        # The redirect is followed here, not in the client: its object holds a package already
        # popped from our queue, and losing it must leave its address in the log.
        reply = self._get(self.url, self.params, follow_redirects=False)
        if reply is None:
            return PollResult()
        if (object_url := redirect_location(reply)) is not None:
            if _object_id(object_url) == EMPTY_OBJECT:
                self.counts.add(Metric.EMPTY_POLLS)
                return PollResult()
            reply = self._read_popped(object_url)
            if reply is None:
                return PollResult()
        if reply.status == 400:
            self._reject_filter(reply)
        if reply.status != 200:
            return self._unexpected(reply)
        try:
            doc = json.loads(reply.text)
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or "package" not in doc:
            self._invalid(InvalidPackage("the answer has no package", reply.text))
            return PollResult()
        if doc["package"] is None:
            self.counts.add(Metric.EMPTY_POLLS)
            return PollResult()
        try:
            package = from_redisq(doc["package"])
        except InvalidPackage as error:
            self._invalid(InvalidPackage(error.reason, reply.text))
            return PollResult()
        return PollResult([package])

    def _reject_filter(self, reply: Reply) -> None:
        message = (
            f"RedisQ rejected the request as malformed (HTTP 400): check REDISQ_FILTER "
            f"{self.package_filter!r}: {answer_message(reply)}. Not asking again with this filter "
            "until the configuration changes."
        )
        if self.package_filter is not None:
            self._rejected_filters[self.package_filter] = message
        self._refuse(message)

    def _read_popped(self, object_url: str) -> Reply | None:
        """The object a listen redirected to: its package is already out of our queue. Work that
        must finish: past the tick's budget (never past the Lambda's time), paced like any request
        (RedisQ allows 2 requests/s per IP), asked for again after a 429 while there is time; when
        it cannot be read, the loss is logged with the object URL."""
        try:
            while True:
                try:
                    reply = self.client.get(object_url, finishing=True)
                except Unreachable as error:
                    problem = f"no answer after every retry: {error}"
                    break
                if self._rate_limited(reply):
                    continue
                self._stop_if_refused(reply)
                if reply.status == 200:
                    return reply
                problem = f"HTTP {reply.status} {reply.text.strip()[:200]}".strip()
                break
        except StopTick as stop:
            self._lost(object_url, f"the tick ended before it was read: {stop.detail or stop.reason}")
            raise
        self._lost(object_url, problem)
        return None

    def _lost(self, object_url: str, problem: str) -> None:
        self.counts.add(Metric.SOURCE_ERRORS)
        logger.error(
            "RedisQ package popped from the queue but not read: fetch object_url by hand while RedisQ still serves it",
            extra={"object_url": object_url, "problem": problem},
        )
