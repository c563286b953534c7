"""Large files from a public archive (zKillboard's history, EVE Ref's daily archives), each
streamed through the shared HTTP client: a 429 waited out (Retry-After, else a growing backoff)
and asked again, a 403 remembered as a refusal so the run asks nothing more, the whole download
bounded by a deadline. The upstream's own error classes are given, so its callers catch them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from killstream.http.client import HttpClient, RateLimitBackoff, Streamed, Unreachable
from killstream.observability import logger

RATE_LIMIT_ATTEMPTS = 3
REFUSAL_PAUSE = 15 * 60.0
"""After a 403 nothing is asked of that upstream for this long (R2Z2's ban lasts about an hour)."""


class FileReader:
    """GET with the body still to read. `unavailable(message)` is raised for a file that cannot
    be had (unreachable, still rate limited), `refused(message)` for a 403."""

    def __init__(
        self,
        client: HttpClient,
        upstream: str,
        *,
        unavailable: type[Exception],
        refused: type[Exception],
        refusal_pause: float = REFUSAL_PAUSE,
    ):
        self.client = client
        self.gate = client.gate
        self.upstream = upstream
        self.unavailable = unavailable
        self.refused = refused
        self.refusal_pause = refusal_pause
        self._rate_limit = RateLimitBackoff()

    @contextmanager
    def open(self, url: str, seconds: float) -> Iterator[Streamed]:
        """The answer to GET url (any status but 429 and 403), within `seconds` in all."""
        for _ in range(RATE_LIMIT_ATTEMPTS + 1):
            try:
                with self.client.stream(url, deadline=self.gate.clock() + seconds) as answer:
                    if answer.status == 429:
                        wait = self._rate_limit.wait(answer.headers.get("Retry-After"))
                        self.gate.hold(wait)
                        logger.warning(f"{self.upstream} rate limited us (429)", extra={"url": url, "wait": wait})
                        continue
                    self._rate_limit.reset()
                    if answer.status == 403:
                        message = f"{self.upstream} refuses service: HTTP 403 {answer.text(300)}".strip()
                        self.gate.refuse(self.refusal_pause, message)
                        raise self.refused(message)
                    yield answer
                    return
            except Unreachable as error:
                raise self.unavailable(f"{url} unreachable: {error}") from None
        raise self.unavailable(f"{url}: still rate limited (429) after {RATE_LIMIT_ATTEMPTS + 1} attempts")
