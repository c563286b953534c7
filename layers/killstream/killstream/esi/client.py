"""ESI's client core: every call to ESI, whatever the route, within ESI's limits
(docs/protocols.md, "ESI").

The core owns what every route shares: the session and its headers, timeouts cut to the caller's
deadline, retries with jittered backoff for 5xx and transport failures, 429's Retry-After, the
420 error limit and the slow-down when a rate-limit bucket runs low. A call ends with the
route's reading of a 2xx answer, a `TransientError`, or `EsiStatusError` for any other status,
whose meaning the route decides (killmails.py, universe.py). The rate limit and the error limit
belong to the source IP, not to a thread, so the pauses they impose are shared by every thread
using one client."""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from requests.adapters import HTTPAdapter

from killstream.config import DEFAULT_ESI_COMPATIBILITY_DATE
from killstream.errors import EsiStatusError, TransientError
from killstream.http import bounded

T = TypeVar("T")
# A 2xx costs 2 tokens of the killmail group's bucket: the pace that bucket sustains.
SUCCESS_COST = 2
_WINDOW = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*([smh])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def parse_bucket(limit: str | None) -> tuple[int, float] | None:
    """(tokens, seconds between successful fetches it sustains) of a limit like `3600/15m`."""
    match = _WINDOW.match(limit or "")
    if not match or int(match[1]) == 0:
        return None
    tokens, window = int(match[1]), int(match[2]) * _UNIT_SECONDS[match[3]]
    return tokens, window / tokens * SUCCESS_COST


class _Limits:
    """What ESI told any thread about its limits: when calls may resume, and how fast."""

    def __init__(self, low_water: float):
        self.low_water = low_water
        self.lock = threading.Lock()
        self.error_limited_until = 0.0  # 420: no call at all before this
        self.retry_after_until = 0.0  # 429: wait (if there is time) before this
        self.next_slot = 0.0  # pacing while the bucket runs low
        self.interval = 0.0
        self.errors_remain: float | None = None  # X-ESI-Error-Limit-Remain, until errors_reset_at
        self.errors_reset_at = 0.0

    def observe_bucket(self, response: bounded.Answer) -> None:
        remaining = _number(response.headers.get("X-Ratelimit-Remaining"))
        bucket = parse_bucket(response.headers.get("X-Ratelimit-Limit"))
        if remaining is None or bucket is None:
            return
        tokens, sustainable = bucket
        with self.lock:
            self.interval = sustainable if remaining <= tokens * self.low_water else 0.0

    def observe_error_limit(self, response: bounded.Answer, now: float) -> None:
        remain = _number(response.headers.get("X-ESI-Error-Limit-Remain"))
        reset = _number(response.headers.get("X-ESI-Error-Limit-Reset"))
        if remain is None or reset is None:
            return
        with self.lock:
            self.errors_remain, self.errors_reset_at = remain, now + max(reset, 0.0)


class EsiClient:
    """Calls `{base_url}{path}` over the given session (see `call`).

    `deadline` is a time on `clock` by which a call must have returned; waits are cut to fit
    it, and each request as a whole (its body too, however slowly it drips) ends by it, and by
    connect + read timeout after it starts (killstream.http.bounded). `take_counts()` returns
    and resets what was spent: `requests` sent, `errors` (non-2xx answers and transport
    failures) and `rate_limited` (420/429 answers, and calls refused locally because of one)."""

    def __init__(
        self,
        base_url: str,
        user_agent: str,
        *,
        compatibility_date: str = DEFAULT_ESI_COMPATIBILITY_DATE,
        session: requests.Session | None = None,
        connect_timeout: float = 3.05,
        read_timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.5,
        low_water: float = 0.1,
        default_error_limit_reset: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ):
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()
        self.session.headers.update(
            {"User-Agent": user_agent, "X-Compatibility-Date": compatibility_date, "Accept": "application/json"}
        )
        # Retries are ours (they must respect the deadline and the error limit), not urllib3's;
        # the pool is sized for the fetcher's threads so keep-alive connections are not dropped.
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=16, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retries = retries
        self.backoff = backoff
        self.default_error_limit_reset = default_error_limit_reset
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self._limits = _Limits(low_water)
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()

    def take_counts(self) -> dict[str, int]:
        with self._counts_lock:
            counts = {key: self._counts[key] for key in ("requests", "errors", "rate_limited")}
            self._counts.clear()
        return counts

    def _count(self, key: str) -> None:
        with self._counts_lock:
            self._counts[key] += 1

    @property
    def errors_remaining(self) -> float | None:
        """What ESI last said is left of its error limit, while that window lasts (else None)."""
        with self._limits.lock:
            if self._limits.errors_remain is None or self._clock() >= self._limits.errors_reset_at:
                return None
            return self._limits.errors_remain

    def call(
        self,
        method: str,
        path: str,
        deadline: float,
        read: Callable[[bounded.Answer], T],
        *,
        body: Any = None,
    ) -> T:
        """`method` `path` (with its leading slash; `body` sent as JSON). A 200 answer is given
        to `read`, whose result is returned; a ValueError from `read` means a cut-off body and is
        retried like a transport failure. 5xx and transport failures are retried (`retries`
        times, jittered backoff), 429 waits out its Retry-After, 420 stops every call until ESI's
        reset: each ends as a `TransientError` when it cannot be cured in time. Any other status
        raises `EsiStatusError`: its meaning is the route's."""
        url = f"{self.base_url}{path}"
        failures = 0
        while True:
            self._wait_for_turn(deadline)
            try:
                response = bounded.request(
                    self.session,
                    method,
                    url,
                    json=body,
                    deadline=min(deadline, self._clock() + self.connect_timeout + self.read_timeout),
                    timeout=(self.connect_timeout, self.read_timeout),
                    clock=self._clock,
                )
            except requests.RequestException as exc:
                self._count("requests")
                self._count("errors")
                failures += 1
                self._back_off(failures, deadline, f"{type(exc).__name__}: {exc}")
                continue
            self._count("requests")
            self._limits.observe_bucket(response)
            self._limits.observe_error_limit(response, self._clock())
            if response.status == 200:
                try:
                    return read(response)
                except ValueError as exc:
                    # A cut-off body is a transport failure: the document itself never changes.
                    self._count("errors")
                    failures += 1
                    self._back_off(failures, deadline, f"malformed JSON from ESI: {exc}")
                    continue
            self._count("errors")
            status = response.status
            if status == 420:
                self._count("rate_limited")
                reset = _number(response.headers.get("X-ESI-Error-Limit-Reset"))
                until = self._clock() + (self.default_error_limit_reset if reset is None else max(reset, 1.0))
                with self._limits.lock:
                    self._limits.error_limited_until = max(self._limits.error_limited_until, until)
                raise TransientError("esi_error_limited", f"ESI's error limit is reached ({_excerpt(response)})")
            if status == 429:
                self._count("rate_limited")
                retry_after = _number(response.headers.get("Retry-After"))
                until = self._clock() + (1.0 if retry_after is None else max(retry_after, 0.0))
                with self._limits.lock:
                    self._limits.retry_after_until = max(self._limits.retry_after_until, until)
                failures += 1
                if failures > self.retries:
                    raise TransientError("esi_rate_limited", f"ESI answered 429 {failures} times")
                continue  # _wait_for_turn sleeps it out, or gives up when it does not fit
            if status >= 500:
                failures += 1
                self._back_off(failures, deadline, f"ESI answered {status}")
                continue
            raise EsiStatusError(status, _excerpt(response))

    def _wait_for_turn(self, deadline: float) -> None:
        """Honour the shared limits before a request: refuse while error-limited, sleep out a
        Retry-After and the pacing slot when they fit before the deadline."""
        limits = self._limits
        with limits.lock:
            now = self._clock()
            if now < limits.error_limited_until:
                self._count("rate_limited")
                raise TransientError(
                    "esi_error_limited",
                    f"not calling ESI for {limits.error_limited_until - now:.0f} s more (error limit)",
                )
            start = max(now, limits.retry_after_until, limits.next_slot)
            if start > deadline - self.connect_timeout:
                if limits.retry_after_until >= limits.next_slot and limits.retry_after_until > now:
                    self._count("rate_limited")
                    raise TransientError(
                        "esi_rate_limited", f"ESI asked to wait {start - now:.1f} s, more than the time left"
                    )
                raise TransientError("out_of_time", "no time left in this invocation to call ESI")
            limits.next_slot = start + limits.interval
        if start > now:
            self._sleep(start - now)

    def _back_off(self, failures: int, deadline: float, reason: str) -> None:
        if failures > self.retries:
            raise TransientError("esi_unavailable", f"{reason} (after {failures} attempts)")
        delay = self.backoff * 2 ** (failures - 1) * (0.5 + self._jitter())
        if self._clock() + delay > deadline - self.connect_timeout:
            raise TransientError("esi_unavailable", f"{reason} (no time left to retry)")
        self._sleep(delay)


def read_json(response: bounded.Answer) -> Any:
    """The answer's JSON. A cut-off body raises ValueError (retried); a body nested deeper than
    Python parses raises RecursionError, which asking again would not cure."""
    return json.loads(response.content)


def _excerpt(response: bounded.Answer) -> str:
    return response.text[:200].strip() or response.reason or ""
