"""The HTTP plumbing every poller request (and every alert's webhook post) shares, written once:
one requests Session with the User-Agent, timeouts, retries with backoff, redirects, and the
reading of 429s and refusals. Every attempt passes the gate first."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import requests

from killstream.http.gate import Gate
from killstream.observability import logger

CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 5.0
RETRIES = 3
RETRY_BACKOFF = 0.5
ERROR_STREAK = 5
ERROR_STREAK_BACKOFF = 5.0
RATE_LIMIT_FIRST = 5.0
RATE_LIMIT_CEILING = 60.0
MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)


@dataclass(frozen=True)
class Reply:
    status: int
    text: str
    headers: Mapping[str, str]
    url: str


class Unreachable(Exception):
    """No usable answer after every retry (already counted and backed off)."""


class HttpClient:
    """One requests Session for an upstream. Network errors and 5xx are retried (RETRIES times,
    exponential backoff; after ERROR_STREAK failures in a row the backoff grows to
    ERROR_STREAK_BACKOFF), each failed attempt reported to `on_failed_attempt`; every other
    answer is returned as it is. Redirects are followed here."""

    def __init__(
        self,
        gate: Gate,
        user_agent: str,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        retries: int = RETRIES,
        on_failed_attempt: Callable[[], None] = lambda: None,
        redact: Callable[[str], str] = lambda text: text,
    ):
        self.gate = gate
        self.redact = redact
        """Applied to every URL and problem this client logs or raises (a webhook URL is a secret)."""
        self.timeout = (connect_timeout, read_timeout)
        self.retries = retries
        self.on_failed_attempt = on_failed_attempt
        self.session = requests.Session()
        self.session.headers.update({"User-Agent": user_agent, "Accept": "application/json"})
        self._failures_in_a_row = 0

    @property
    def longest_request(self) -> float:
        """The longest one attempt can take before its timeouts end it."""
        return sum(self.timeout)

    def get(self, url: str, params: Mapping[str, object] | None = None, *, follow_redirects: bool = True) -> Reply:
        """Each attempt, a redirect's included, is a request of its own through the gate."""
        reply = self._attempt_all(url, params)
        for _ in range(MAX_REDIRECTS if follow_redirects else 0):
            location = redirect_location(reply)
            if location is None:
                break
            reply = self._attempt_all(location, None)
        return reply

    def post(self, url: str, body: Any) -> Reply:
        """`body` as JSON, retried like a GET; a redirect is returned, not followed."""
        return self._attempt_all(url, None, method="POST", body=body)

    def _attempt_all(
        self, url: str, params: Mapping[str, object] | None, *, method: str = "GET", body: Any = None
    ) -> Reply:
        problem = ""
        for attempt in range(self.retries + 1):
            self.gate.pace()
            try:
                response = self.session.request(
                    method,
                    url,
                    params=params,  # type: ignore[arg-type]  # requests takes any str()-able value; its stub is narrower
                    json=body,
                    timeout=self.timeout,
                    allow_redirects=False,
                )
            except requests.RequestException as error:
                problem = self.redact(f"{type(error).__name__}: {error}")
            else:
                if response.status_code < 500:
                    self._failures_in_a_row = 0
                    return Reply(response.status_code, response.text, response.headers, response.url)
                problem = f"HTTP {response.status_code}"
            self._failures_in_a_row += 1
            self.on_failed_attempt()
            backoff = ERROR_STREAK_BACKOFF if self._failures_in_a_row >= ERROR_STREAK else RETRY_BACKOFF * 2**attempt
            self.gate.hold(backoff)
            logger.warning(
                "request failed",
                extra={
                    "url": self.redact(url),
                    "problem": problem,
                    "attempt": attempt + 1,
                    "failures_in_a_row": self._failures_in_a_row,
                    "backoff_seconds": backoff,
                },
            )
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
