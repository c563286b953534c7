"""RedisQ, the stream of the original design (docs/streams.md, "RedisQ"): one long poll per
request; reads are destructive, so a package is handed on as soon as it is read."""

from __future__ import annotations

import json

from killstream.package import InvalidPackage, from_redisq

from .base import HttpClient, PollResult, Source, answer_message

READ_TIMEOUT_BEYOND_TTW = 5.0
"""The listen holds the request for up to ttw seconds (and a refusal comes after ~3 s): the read
timeout must outlast both, or a timed-out listen is still held by the server when the retry comes
(429), and the package it pops is lost."""


class RedisQSource(Source):
    name = "redisq"
    title = "RedisQ"
    flush_within = 0.0

    def __init__(self, client: HttpClient, url: str, queue_id: str, ttw: int, package_filter: str | None = None):
        super().__init__(client)
        self.url = url
        self.package_filter = package_filter
        self.params = {"queueID": queue_id, "ttw": ttw}
        if package_filter:
            self.params["filter"] = package_filter

    def poll(self) -> PollResult:
        reply = self._get(self.url, self.params)
        if reply is None:
            return PollResult()
        if reply.status == 400:
            self._refuse(f"RedisQ rejected the request as malformed (HTTP 400): check REDISQ_FILTER "
                         f"{self.package_filter!r}: {answer_message(reply)}")
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
            self.gate.count("EmptyPolls")
            return PollResult()
        try:
            package = from_redisq(doc["package"])
        except InvalidPackage as error:
            self._invalid(InvalidPackage(error.reason, reply.text))
            return PollResult()
        return PollResult([package])
