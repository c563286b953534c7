"""Fault injection for the local R2Z2, RedisQ and ESI servers: which misbehaviour, if any, the
next request gets. The HTTP server (http_server.py) serves what is decided here.

Two ways to make a server misbehave:

- scripted faults, consumed in order by the next request they match (`when`: a substring of the
  path, or a predicate on it; `times=None` keeps a fault until `clear()`):
  `server.faults.script(status=429, headers={"Retry-After": "2"})`, `script(stall=5.0)`,
  `script(body=b"{garbage")`, `script(disconnect=True)`, `script(status=503, when="/listen.php")`,
  `script(drip=0.3)` (the normal answer, its body one byte every 0.3 s);
- seeded random rates, one roll per request: `server.faults.rates = FaultRates(rate_5xx=0.02)`.

Every fault served is appended to `server.faults.injected`.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

PathMatch = str | Callable[[str], bool] | None
GARBAGE_BODY = b'{"killmail_id": 1, "zkb": {"hash": "trunc'
SERVER_ERRORS = (500, 502, 503, 504)


def _path_matches(when: PathMatch, path: str) -> bool:
    if when is None:
        return True
    return when in path if isinstance(when, str) else when(path)


@dataclass
class Fault:
    """One misbehaviour. Without `status` or `body` the normal answer is still served, after
    `stall` seconds and with `headers` added."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    stall: float = 0.0
    disconnect: bool = False
    when: PathMatch = None
    times: int | None = 1
    drip: float = 0.0
    """Seconds between the bytes of the body: an answer that trickles in, each read short of a timeout."""

    @property
    def kind(self) -> str:
        if self.disconnect:
            return "disconnect"
        if self.drip:
            return "drip"
        if self.status is not None:
            return "status"
        if self.body is not None:
            return "garbage"
        return "stall" if self.stall else "headers"

    def replaces_answer(self) -> bool:
        return self.status is not None or self.body is not None


@dataclass(frozen=True)
class FaultRates:
    """Per-request chances, rolled on the injector's seeded generator (at most one fault a request)."""

    rate_429: float = 0.0
    rate_5xx: float = 0.0
    rate_stall: float = 0.0
    rate_garbage: float = 0.0
    rate_disconnect: float = 0.0
    stall_seconds: float = 2.0
    retry_after: str = "1"
    when: PathMatch = None

    def roll(self, rng: random.Random) -> Fault | None:
        roll = rng.random()
        # Drawn on every roll so that the sequence of draws, hence the run, depends only on the seed.
        server_error = rng.choice(SERVER_ERRORS)
        for rate, make in (
            (self.rate_429, lambda: Fault(status=429, headers={"Retry-After": self.retry_after})),
            (self.rate_5xx, lambda: Fault(status=server_error)),
            (self.rate_stall, lambda: Fault(stall=self.stall_seconds)),
            (self.rate_garbage, lambda: Fault(body=GARBAGE_BODY)),
            (self.rate_disconnect, lambda: Fault(disconnect=True)),
        ):
            if roll < rate:
                return make()
            roll -= rate
        return None


@dataclass(frozen=True)
class InjectedFault:
    at: float
    path: str
    kind: str
    status: int | None
    scripted: bool


class FaultInjector:
    def __init__(self, seed: int = 0, rates: FaultRates | None = None):
        self.rates = rates or FaultRates()
        self.injected: list[InjectedFault] = []
        self._rng = random.Random(seed)
        self._scripted: list[Fault] = []
        self._lock = threading.Lock()

    def script(
        self,
        status: int | None = None,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        stall: float = 0.0,
        disconnect: bool = False,
        when: PathMatch = None,
        times: int | None = 1,
        drip: float = 0.0,
    ) -> Fault:
        fault = Fault(status, dict(headers or {}), body, stall, disconnect, when, times, drip)
        with self._lock:
            self._scripted.append(fault)
        return fault

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._scripted)

    def clear(self) -> None:
        with self._lock:
            self._scripted.clear()
            self.rates = FaultRates()

    def draw(self, path: str) -> Fault | None:
        with self._lock:
            fault = self._take_scripted(path)
            scripted = fault is not None
            if fault is None and _path_matches(self.rates.when, path):
                fault = self.rates.roll(self._rng)
            if fault is not None:
                self.injected.append(InjectedFault(time.monotonic(), path, fault.kind, fault.status, scripted))
            return fault

    def _take_scripted(self, path: str) -> Fault | None:
        for index, fault in enumerate(self._scripted):
            if _path_matches(fault.when, path):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        del self._scripted[index]
                return fault
        return None
