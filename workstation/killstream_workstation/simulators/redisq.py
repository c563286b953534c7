"""A local RedisQ (docs/protocols.md, "RedisQ"), after zKillboard/RedisQ's listen.js, object.js and
util/filters.js.

Like the real listen.js, a listen that finds a package pops it and answers 302 to
`/object.php?objectID=X` (after a pause: the real one sleeps 0.5-1.5 s there); one that finds
nothing within ttw answers 302 to `/object.php?objectID=null`, which serves `{"package": null}`.
Either way a client that follows redirects reads `{"package": ...}`. Both Locations are relative,
as listen.js writes them.

Queues: the real server queues packages only for queueIDs it already knows. Here a queue is
created on its first listen and starts with every package published so far, so a test can
publish first and listen after, without a warm-up call.
"""

from __future__ import annotations

import json
import operator
import re
import threading
import time
from collections import deque
from dataclasses import dataclass

from killstream_workstation.simulators.faults import FaultRates
from killstream_workstation.simulators.http_server import Request, Response, SimulatorServer, json_response

SHUTDOWN_ANSWER = {
    "access": "denied!",
    "message": "redisq is shutting down, please use R2Z2 instead: https://github.com/zKillboard/zKillboard/wiki/API-(R2Z2)",
}
CORS = {"Access-Control-Allow-Origin": "*"}
NULL_REDIRECT = "/object.php?objectID=null"
OPERATOR = re.compile(r"<=|>=|!=|=|<|>")
COMPARISONS = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class FilterError(ValueError):
    pass


@dataclass(frozen=True)
class Rule:
    key: str
    op: str
    value: str


@dataclass(frozen=True)
class PackageFilter:
    """`key<op>value` rules joined by `;` (all must hold) or `,` (any may), never both. A rule holds
    when any value stored under `key`, at any depth, inside arrays or an element of an array
    (`labels=pvp`), compares true: as numbers when both sides are numbers, else as text (JSON
    spelling for true/false/null)."""

    rules: tuple[Rule, ...]
    any_of: bool

    @classmethod
    def parse(cls, text: str) -> PackageFilter:
        if ";" in text and "," in text:
            raise FilterError("cannot mix ; and , in a filter")
        any_of = "," in text
        rules = []
        for part in text.split("," if any_of else ";"):
            found = OPERATOR.search(part)
            if found is None:
                raise FilterError(f"invalid rule {part!r}: use key<op>value")
            rules.append(Rule(part[: found.start()].strip(), found[0], part[found.end() :].strip()))
        return cls(tuple(rules), any_of)

    def matches(self, package: dict) -> bool:
        results = (
            any(_compare(rule.op, found, rule.value) for found in _values_of(package, rule.key)) for rule in self.rules
        )
        return any(results) if self.any_of else all(results)


def _values_of(node: object, key: str):
    if isinstance(node, list):
        for item in node:
            yield from _values_of(item, key)
    elif isinstance(node, dict):
        for name, value in node.items():
            if name == key:
                yield from value if isinstance(value, list) else (value,)
            yield from _values_of(value, key)


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _compare(op: str, found: object, wanted: str) -> bool:
    """Numbers compare as numbers; anything else as text (JSON for what is not a string)."""
    left, right = _number(found), _number(wanted)
    if left is not None and right is not None:
        return COMPARISONS[op](left, right)
    text = found if isinstance(found, str) else json.dumps(found)
    return COMPARISONS[op](text, wanted)


def _ttw(raw: str | None) -> int:
    if raw is None:
        return 10
    try:
        return min(10, max(1, int(raw)))
    except (TypeError, ValueError):
        return 10


class RedisQServer(SimulatorServer):
    """Serves `/listen.php` and `/object.php`; point REDISQ_URL at `url`. Waits for packages last
    `ttw * ttw_scale` seconds; a popped package is redirected to after `redirect_delay` seconds.
    With `shutdown` set (any time), every call is refused with 403 after `shutdown_delay`
    seconds, as RedisQ did from 2026."""

    def __init__(
        self,
        *,
        ttw_scale: float = 1.0,
        redirect_delay: float = 0.0,
        shutdown: bool = False,
        shutdown_delay: float = 3.0,
        seed: int = 0,
        fault_rates: FaultRates | None = None,
        latency: float = 0.0,
    ):
        super().__init__(seed=seed, fault_rates=fault_rates, latency=latency)
        self.ttw_scale = ttw_scale
        self.redirect_delay = redirect_delay
        self.popped = 0
        """Packages taken off a queue: each is lost unless its object is read."""
        self.shutdown = shutdown
        self.shutdown_delay = shutdown_delay
        self.queues: dict[str, deque[dict]] = {}
        self._published: list[dict] = []
        self._objects: dict[str, bytes] = {}
        self._listening: set[str] = set()
        self._arrived = threading.Condition(self._lock)

    @property
    def url(self) -> str:
        return f"{self.base_url}/listen.php"

    def publish(self, esi_doc: dict, killmail_hash: str, zkb: dict, *, include_killmail: bool = False) -> int:
        """Queue one killmail on every queue; `include_killmail` gives the pre-2025-12 shape."""
        esi = {key: value for key, value in esi_doc.items() if key != "killmail_hash"}
        killmail_id = esi["killmail_id"]
        href = f"https://esi.evetech.net/killmails/{killmail_id}/{killmail_hash}/"
        package = {"killID": killmail_id, "zkb": {"hash": killmail_hash, "href": href, **zkb}}
        if include_killmail:
            package["killmail"] = esi
        with self._arrived:
            self._published.append(package)
            for queue in self.queues.values():
                queue.append(package)
            self._arrived.notify_all()
        return killmail_id

    def stop(self) -> None:
        with self._arrived:
            self._stopping.set()
            self._arrived.notify_all()
        super().stop()

    def respond(self, request: Request) -> Response:
        if self.shutdown:
            self.pause(self.shutdown_delay)
            return json_response(SHUTDOWN_ANSWER, 403)
        if request.path == "/listen.php":
            return self._listen(request.query)
        if request.path == "/object.php":
            return self._object(request.query.get("objectID", "").strip())
        return Response(404)

    def _listen(self, query: dict[str, str]) -> Response:
        queue_id = query.get("queueID", "").strip()
        if not queue_id:
            return Response(429)
        try:
            package_filter = PackageFilter.parse(query["filter"]) if query.get("filter") else None
        except FilterError as error:
            return json_response({"error": str(error)}, 400)
        with self._arrived:
            if queue_id in self._listening:
                return Response(429)
            self._listening.add(queue_id)
            queue = self.queues.setdefault(queue_id, deque(self._published))
        try:
            package = self._pop(queue, package_filter, time.monotonic() + _ttw(query.get("ttw")) * self.ttw_scale)
        finally:
            with self._lock:
                self._listening.discard(queue_id)
        if package is None:
            return Response(302, headers={"Location": NULL_REDIRECT, **CORS})
        with self._lock:
            object_id = str(len(self._objects) + 1)
            self._objects[object_id] = json.dumps({"package": package}).encode()
            self.popped += 1
        self.pause(self.redirect_delay)
        return Response(302, headers={"Location": f"/object.php?objectID={object_id}", **CORS})

    def _pop(self, queue: deque[dict], package_filter: PackageFilter | None, deadline: float) -> dict | None:
        # A package the filter rejects is dropped from the queue: this listener asked never to see it.
        with self._arrived:
            while True:
                while queue:
                    package = queue.popleft()
                    if package_filter is None or package_filter.matches(package):
                        return package
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping.is_set():
                    return None
                self._arrived.wait(remaining)

    def _object(self, object_id: str) -> Response:
        if object_id == "null":
            return json_response({"package": None}, headers=CORS)
        body = self._objects.get(object_id)
        if body is None:
            return Response(404)
        return Response(200, body, {"Content-Type": "application/json", **CORS})
