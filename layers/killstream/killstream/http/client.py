"""The HTTP plumbing every upstream request shares (the poller's feed, the reconciler's history
files, every alert's webhook post), written once: one requests Session with the User-Agent,
timeouts, retries with backoff, redirects, the reading of 429s and refusals, and bodies streamed
when they are too large to hold. Every attempt passes the gate first, and a whole answer is read
by the deadline the gate gives it and by its timeouts added up (killstream.http.bounded), however
slowly it drips in."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urljoin

import requests
import urllib3

from killstream.http import bounded
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
CHUNK_BYTES = 64 * 1024
T = TypeVar("T", "Reply", requests.Response)


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
        """The longest one attempt of `get` can take: its timeouts added up bound the whole of it."""
        return sum(self.timeout)

    def get(
        self,
        url: str,
        params: Mapping[str, object] | None = None,
        *,
        follow_redirects: bool = True,
        finishing: bool = False,
    ) -> Reply:
        """Each attempt, a redirect's included, is a request of its own through the gate, its
        answer read whole. `finishing`: work that must be done once begun (Gate.pace): past
        the budget too."""
        reply = self._attempt_all(url, partial(self._read, url, params), finishing)
        for _ in range(MAX_REDIRECTS if follow_redirects else 0):
            location = redirect_location(reply)
            if location is None:
                break
            reply = self._attempt_all(location, partial(self._read, location, None), finishing)
        return reply

    def post(self, url: str, body: Any) -> Reply:
        """`body` as JSON, retried like a GET, its answer read whole; a redirect is returned, not
        followed."""
        return self._attempt_all(url, partial(self._read, url, None, method="POST", body=body), False)

    @contextmanager
    def stream(self, url: str, *, deadline: float | None = None) -> Iterator[Streamed]:
        """The answer with its body still to be read, chunk by chunk (a file too large to hold),
        closed on leaving. Retried like `get` until the headers arrive; a body cut off after them
        is the caller's to handle (Interrupted). `deadline` (on the gate's clock) bounds the whole
        download, so a body that drips in cannot hold the caller for ever."""
        response = self._attempt_all(url, partial(self._open, url), False)
        for _ in range(MAX_REDIRECTS):
            location = redirect_location(_reply(response, text=""))
            if location is None:
                break
            response.close()
            response = self._attempt_all(location, partial(self._open, location), False)
        try:
            yield Streamed(response, clock=self.gate.clock, deadline=deadline)
        finally:
            response.close()

    def _read(
        self, url: str, params: Mapping[str, object] | None, deadline: float, *, method: str = "GET", body: Any = None
    ) -> Reply:
        """One request (a GET, or `body` POSTed as JSON), its answer read whole by `deadline` and
        by its timeouts added up."""
        answer = bounded.request(
            self.session,
            method,
            url,
            params=params,
            json=body,
            deadline=min(deadline, self.gate.clock() + self.longest_request),
            timeout=self.timeout,
            clock=self.gate.clock,
        )
        return Reply(answer.status, answer.text, answer.headers, answer.url)

    def _open(self, url: str, deadline: float) -> requests.Response:
        """One GET up to its headers (the body is the caller's: Streamed bounds it), its timeouts
        cut to what is left before `deadline`."""
        left = max(0.01, deadline - self.gate.clock())  # the gate let it start before the deadline
        connect, read = self.timeout
        return self.session.get(url, timeout=(min(connect, left), min(read, left)), allow_redirects=False, stream=True)

    def _attempt_all(self, url: str, attempt: Callable[[float], T], finishing: bool) -> T:
        """`attempt(deadline)` until an answer below 500, through the gate each time."""
        problem = ""
        for attempt_number in range(self.retries + 1):
            deadline = self.gate.pace(finishing=finishing)
            try:
                answer = attempt(deadline)
            except requests.RequestException as error:
                problem = self.redact(f"{type(error).__name__}: {error}")
            else:
                status = answer.status if isinstance(answer, Reply) else answer.status_code
                if status < 500:
                    self._failures_in_a_row = 0
                    return answer
                problem = f"HTTP {status}"
                if isinstance(answer, requests.Response):
                    answer.close()
            self._failures_in_a_row += 1
            self.on_failed_attempt()
            backoff = (
                ERROR_STREAK_BACKOFF if self._failures_in_a_row >= ERROR_STREAK else RETRY_BACKOFF * 2**attempt_number
            )
            self.gate.hold(backoff)
            logger.warning(
                "request failed",
                extra={
                    "url": self.redact(url),
                    "problem": problem,
                    "attempt": attempt_number + 1,
                    "failures_in_a_row": self._failures_in_a_row,
                    "backoff_seconds": backoff,
                },
            )
        raise Unreachable(problem)


def _reply(response: requests.Response, text: str | None = None) -> Reply:
    return Reply(response.status_code, response.text if text is None else text, response.headers, response.url)


class Interrupted(Exception):
    """A streamed body that stopped before its end: the connection broke, a read timed out, or
    the download ran past its deadline. `received` bytes had arrived."""

    def __init__(self, reason: str, received: int):
        super().__init__(f"{reason} after {received:,} bytes")
        self.reason = reason
        self.received = received


class Streamed:
    """An answer whose body is read as it arrives."""

    def __init__(self, response: requests.Response, *, clock: Callable[[], float], deadline: float | None):
        self.status = response.status_code
        self.headers = response.headers
        self.url = response.url
        self.received = 0
        self._response = response
        self._clock = clock
        self._deadline = deadline

    def text(self, limit: int = 2000) -> str:
        """The start of a (short) body, for an error message."""
        return next(self.chunks(limit), b"").decode("utf-8", "replace")

    def chunks(self, size: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The body in chunks of at most `size` bytes (decompressed, as sent); Interrupted when
        it stops before its end."""
        # read1: whatever has arrived, up to `size`, so the deadline is checked while bytes drip in
        # (iter_content would wait for a whole chunk).
        raw = self._response.raw
        while True:
            if self._deadline is not None and self._clock() > self._deadline:
                raise Interrupted("the download took too long", self.received)
            try:
                chunk = raw.read1(size, decode_content=True)
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
                raise Interrupted(f"{type(error).__name__}: {error}", self.received) from None
            if not chunk:
                return
            self.received += len(chunk)
            yield chunk


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
