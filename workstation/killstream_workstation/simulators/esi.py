"""A local ESI (docs/protocols.md, "ESI"): the killmail route with its documents and the
`killmail` group's floating-window token bucket, the universe routes answering for every id of
those killmails from a generated universe (universe.py), and the legacy error limit over all of
them, with their headers."""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter, deque
from collections.abc import Iterable

from killstream_workstation.simulators.faults import FaultRates
from killstream_workstation.simulators.http_server import Request, Response, SimulatorServer, json_response
from killstream_workstation.simulators.universe import GeneratedUniverse

KILLMAIL_PATH = re.compile(r"/killmails/(\d+)/(\w+)/?")
NAMES_PATH = "/universe/names/"
LOOKUP_PATH = re.compile(r"/universe/(systems|constellations|regions|types|groups|categories)/(\d+)/?")
INVALID_KILLMAIL = {"error": "Invalid killmail_id and/or killmail_hash"}
UNKNOWN_NAMES = {"error": "Ensure all IDs are valid before resolving."}
ERROR_LIMITED = {"error": "This software has exceeded the error limit for ESI."}
TOKEN_COST = {2: 2, 3: 1, 4: 5, 5: 0}
# Refused before any work is done: they cost no tokens, and a 420 is the error limit itself.
REFUSALS = (420, 429)


class EsiServer(SimulatorServer):
    """Serves `/killmails/{id}/{hash}/`, `POST /universe/names/` and `GET /universe/{kind}/{id}/`;
    point ESI_URL at `url`. `universe.forget(id)` makes an id unknown (404, its whole names batch
    too); faults apply to every route (`faults.script(503, when="/universe/names/")`).

    Every answer on the route spends tokens from a bucket of `rate_limit_tokens` that come back
    `rate_limit_window` seconds later; an empty bucket answers 429 with Retry-After. More than
    `error_limit` non-2xx/3xx answers within an `error_window` answer 420 everywhere until the
    window ends."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        invalid_status: int = 422,
        rate_limit_tokens: int = 3600,
        rate_limit_window: float = 900.0,
        error_limit: int = 100,
        error_window: float = 60.0,
        seed: int = 0,
        fault_rates: FaultRates | None = None,
    ):
        super().__init__(seed=seed, fault_rates=fault_rates, latency=latency)
        self.invalid_status = invalid_status
        self.rate_limit_tokens = rate_limit_tokens
        self.rate_limit_window = rate_limit_window
        self.error_limit = error_limit
        self.error_window = error_window
        self.hits: Counter[int] = Counter()  # killmail route, by killmail id
        self.route_hits: Counter[str] = Counter()  # every request, by route: killmails, names, systems, ...
        self.lookups: Counter[tuple[str, int]] = Counter()  # universe GETs, by (kind, id)
        self.names_batches: list[list[int]] = []
        self.universe = GeneratedUniverse()
        self.user_agents: Counter[str | None] = Counter()
        self.compatibility_dates: Counter[str | None] = Counter()
        self._killmails: dict[int, tuple[str, bytes]] = {}
        self._spent: deque[tuple[float, int]] = deque()
        self._tokens_used = 0
        self._errors = 0
        self._error_window_ends = 0.0

    @property
    def url(self) -> str:
        return self.base_url

    def add(self, esi_doc: dict, killmail_hash: str) -> None:
        esi = {key: value for key, value in esi_doc.items() if key != "killmail_hash"}
        self._killmails[esi["killmail_id"]] = (killmail_hash, json.dumps(esi).encode())
        self.universe.add_killmail(esi)

    def add_many(self, corpus_docs: Iterable[dict]) -> None:
        for doc in corpus_docs:
            self.add(doc, doc["killmail_hash"])

    def fail(
        self, killmail_id: int, status: int, *, times: int | None = 1, headers: dict[str, str] | None = None
    ) -> None:
        if status == 429:
            headers = {"Retry-After": "1", **(headers or {})}
        self.faults.script(status, headers=headers, when=self._route(killmail_id), times=times)

    def slow(self, killmail_id: int, seconds: float, *, times: int | None = 1) -> None:
        self.faults.script(stall=seconds, when=self._route(killmail_id), times=times)

    def drip(self, killmail_id: int, seconds_per_byte: float, *, times: int | None = 1) -> None:
        """Answer, but one byte of the body every `seconds_per_byte`."""
        self.faults.script(drip=seconds_per_byte, when=self._route(killmail_id), times=times)

    def malformed(self, killmail_id: int, *, times: int | None = 1) -> None:
        body = self._killmails[killmail_id][1]
        self.faults.script(body=body[: len(body) // 2], when=self._route(killmail_id), times=times)

    def mismatch(self, killmail_id: int, *, times: int | None = 1) -> None:
        """Answer with a valid document of another killmail."""
        other = json.loads(self._killmails[killmail_id][1]) | {"killmail_id": killmail_id + 1}
        self.faults.script(body=json.dumps(other).encode(), when=self._route(killmail_id), times=times)

    @property
    def total_hits(self) -> int:
        with self._lock:
            return self.hits.total()

    @property
    def tokens_remaining(self) -> int:
        with self._lock:
            self._release_tokens(time.monotonic())
            return max(0, self.rate_limit_tokens - self._tokens_used)

    @property
    def errors_remaining(self) -> int:
        with self._lock:
            self._roll_error_window(time.monotonic())
            return max(0, self.error_limit - self._errors)

    def respond(self, request: Request) -> Response:
        if self.errors_remaining == 0:
            return json_response(ERROR_LIMITED, 420)
        if request.path == NAMES_PATH and request.method == "POST":
            return self._names(request)
        if lookup := LOOKUP_PATH.fullmatch(request.path):
            doc = self.universe.lookup(lookup[1], int(lookup[2]))
            return json_response({"error": "Not found"}, 404) if doc is None else json_response(doc)
        match = KILLMAIL_PATH.fullmatch(request.path)
        if match is None:
            return json_response({"error": "Not found"}, 404)
        if self.tokens_remaining == 0:
            return json_response(
                {"error": "Too many requests"}, 429, {"Retry-After": str(self._seconds_to_next_token())}
            )
        killmail_hash, body = self._killmails.get(int(match[1]), (None, b""))
        if killmail_hash != match[2]:
            return json_response(INVALID_KILLMAIL, self.invalid_status)
        return Response(200, body, {"Content-Type": "application/json"})

    def _names(self, request: Request) -> Response:
        try:
            ids = json.loads(request.body)
        except ValueError:
            ids = None
        if not isinstance(ids, list) or not 1 <= len(ids) <= 1000 or not all(type(i) is int for i in ids):
            return json_response({"error": "ids: between 1 and 1000 integers"}, 400)
        answer = self.universe.names(ids)
        return json_response(UNKNOWN_NAMES, 404) if answer is None else json_response(answer)

    def received(self, request: Request) -> None:
        with self._lock:
            self.user_agents[request.headers.get("User-Agent")] += 1
            self.compatibility_dates[request.headers.get("X-Compatibility-Date")] += 1
            if match := KILLMAIL_PATH.fullmatch(request.path):
                self.hits[int(match[1])] += 1
                self.route_hits["killmails"] += 1
            elif lookup := LOOKUP_PATH.fullmatch(request.path):
                self.lookups[(lookup[1], int(lookup[2]))] += 1
                self.route_hits[lookup[1]] += 1
            elif request.path == NAMES_PATH:
                self.route_hits["names"] += 1
                try:
                    self.names_batches.append(json.loads(request.body))
                except ValueError:
                    self.names_batches.append([])

    def observe(self, request: Request, response: Response) -> None:
        now = time.monotonic()
        computed: dict[str, str] = {}
        with self._lock:
            if KILLMAIL_PATH.fullmatch(request.path):
                self._spend(now, response.status)
                computed |= {
                    "X-Ratelimit-Group": "killmail",
                    "X-Ratelimit-Limit": f"{self.rate_limit_tokens}/{_window_label(self.rate_limit_window)}",
                    "X-Ratelimit-Remaining": str(max(0, self.rate_limit_tokens - self._tokens_used)),
                    "X-Ratelimit-Used": str(self._tokens_used),
                }
            self._roll_error_window(now)
            if response.status >= 400 and response.status != 420:
                self._errors += 1
            computed |= {
                "X-ESI-Error-Limit-Remain": str(max(0, self.error_limit - self._errors)),
                "X-ESI-Error-Limit-Reset": str(math.ceil(self._error_window_ends - now)),
            }
        # Headers a test scripted on purpose win over the computed ones.
        response.headers = computed | response.headers

    def _route(self, killmail_id: int) -> str:
        return f"/killmails/{killmail_id}/"

    def _spend(self, now: float, status: int) -> None:
        self._release_tokens(now)
        cost = 0 if status in REFUSALS else TOKEN_COST.get(status // 100, 0)
        if cost:
            self._spent.append((now, cost))
            self._tokens_used += cost

    def _release_tokens(self, now: float) -> None:
        while self._spent and self._spent[0][0] <= now - self.rate_limit_window:
            self._tokens_used -= self._spent.popleft()[1]

    def _seconds_to_next_token(self) -> int:
        with self._lock:
            oldest = self._spent[0][0] if self._spent else time.monotonic()
            return max(1, math.ceil(oldest + self.rate_limit_window - time.monotonic()))

    def _roll_error_window(self, now: float) -> None:
        if now >= self._error_window_ends:
            self._errors = 0
            self._error_window_ends = now + self.error_window


def _window_label(seconds: float) -> str:
    return f"{seconds / 60:g}m" if seconds % 60 == 0 else f"{seconds:g}s"
