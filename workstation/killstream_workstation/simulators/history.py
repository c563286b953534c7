"""zKillboard's history for what a local R2Z2 published (docs/protocols.md, "R2Z2 history"):
`/history/totals.json`, `/history/YYYYMMDD.json` (id → hash) and `/history/raw/YYYYMMDD.json`
(id → ESI killmail, sorted by id), for every UTC day that has ended at least `delay` ago —
killmails whose live files expired before anyone read them included. Served by the R2Z2
simulator, on the same host as the feed, as zKillboard serves both.

Faults, per day: a day list that is no JSON, no day list, a missing or a truncated raw file,
an entry with a malformed hash; and killmails counted in totals.json but left out of the list
(zKillboard drops empty hashes)."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from killstream_workstation.simulators.http_server import Response, json_response

LIST_PATH = re.compile(r"/history/(\d{8})\.json")
RAW_PATH = re.compile(r"/history/raw/(\d{8})\.json")
ONE_YEAR = {"Cache-Control": "max-age=31536000"}  # as zKillboard serves them, re-uploads or not
NOT_FOUND = Response(404, b"Not Found", {"Content-Type": "text/plain"})

LIST_GARBAGE = "list_garbage"
LIST_MISSING = "list_missing"
RAW_MISSING = "raw_missing"
RAW_TRUNCATED = "raw_truncated"
MALFORMED_HASH = "malformed_hash"
FAULTS = (LIST_GARBAGE, LIST_MISSING, RAW_MISSING, RAW_TRUNCATED, MALFORMED_HASH)


class HistoryArchive:
    def __init__(self, *, delay: timedelta = timedelta(hours=6), now: Callable[[], datetime] | None = None):
        self.delay = delay
        self.now = now or (lambda: datetime.now(UTC))
        self.unlisted: Counter[date] = Counter()
        """Killmails per day that totals.json counts and no day list names (empty hashes)."""
        self.faults: dict[date, set[str]] = {}
        self._killmails: dict[int, tuple[date, str, bytes | None]] = {}
        self._lock = threading.Lock()

    def add(self, esi_doc: dict, killmail_hash: str, *, raw: bool = True) -> None:
        """A killmail zKillboard has: listed with its hash, and in the raw file unless `raw` is
        false (zKillboard never got its body from ESI)."""
        esi = {key: value for key, value in esi_doc.items() if key != "killmail_hash"}
        day = datetime.fromisoformat(esi["killmail_time"].replace("Z", "+00:00")).astimezone(UTC).date()
        body = json.dumps(esi, separators=(",", ":")).encode() if raw else None
        with self._lock:
            self._killmails[esi["killmail_id"]] = (day, killmail_hash, body)

    def fault(self, day: date, kind: str) -> None:
        if kind not in FAULTS:
            raise ValueError(f"unknown history fault {kind!r}; one of {', '.join(FAULTS)}")
        self.faults.setdefault(day, set()).add(kind)

    def clear_faults(self) -> None:
        self.faults.clear()

    def days(self) -> list[date]:
        """The days served: those that ended at least `delay` ago."""
        served_until = (self.now() - self.delay).date()
        with self._lock:
            return sorted({day for day, _, _ in self._killmails.values() if day < served_until})

    def killmails(self, day: date) -> dict[int, str]:
        """The day's ids and hashes, as the day list gives them (before faults)."""
        with self._lock:
            return {kid: h for kid, (d, h, _) in sorted(self._killmails.items()) if d == day}

    def respond(self, path: str) -> Response:
        if path == "/history/totals.json":
            return json_response(self._totals(), headers=ONE_YEAR)
        for pattern, answer in ((LIST_PATH, self._list), (RAW_PATH, self._raw)):
            match = pattern.fullmatch(path)
            if match:
                try:
                    day = datetime.strptime(match[1], "%Y%m%d").date()
                except ValueError:
                    return NOT_FOUND
                return answer(day) if day in self.days() else NOT_FOUND
        return NOT_FOUND

    def _totals(self) -> dict[str, int]:
        served = set(self.days())
        with self._lock:
            counts = Counter(day for day, _, _ in self._killmails.values() if day in served)
        return {f"{day:%Y%m%d}": counts[day] + self.unlisted[day] for day in sorted(served)}

    def _list(self, day: date) -> Response:
        faults = self.faults.get(day, set())
        if LIST_MISSING in faults:
            return NOT_FOUND
        if LIST_GARBAGE in faults:
            return Response(200, b"<html><body>502 Bad Gateway</body></html>", {"Content-Type": "text/html"})
        listed = {str(kid): h for kid, h in self.killmails(day).items()}
        if MALFORMED_HASH in faults and listed:
            listed[next(iter(listed))] = "not-a-hash"
        return json_response(listed, headers=ONE_YEAR)

    def _raw(self, day: date) -> Response:
        faults = self.faults.get(day, set())
        if RAW_MISSING in faults:
            return NOT_FOUND
        with self._lock:
            bodies = sorted((kid, body) for kid, (d, _, body) in self._killmails.items() if d == day and body)
        data = b"{" + b",".join(b'"%d":%s' % (kid, body) for kid, body in bodies) + b"}"
        if RAW_TRUNCATED in faults:
            data = data[: len(data) // 2]
        return Response(200, data, {"Content-Type": "application/json", **ONE_YEAR})
