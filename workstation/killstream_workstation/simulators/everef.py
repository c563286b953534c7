"""A local EVE Ref (docs/protocols.md, "EVE Ref archives"): the daily archives
`/killmails/{YYYY}/killmails-{YYYY-MM-DD}.tar.bz2` (members `killmails/{id}.json`: ESI's body,
`killmail_hash` and `http_last_modified`) and `/killmails/totals.json` (`{"YYYYMMDD": count}`),
made from whatever killmails are added (the corpus, or generated days of realistic size). Point
EVEREF_URL at `url`.

Faults, per day: `missing` (404), `truncated` (the archive cut short), `not_json` (a member that
is no JSON), `invalid` (a member failing validation), `malformed_hash` (a hash that is not 40
hex), `unexpected_member` (a file that is no killmail), `slow` (the answer waits `slow_seconds`),
`overcounted` (totals.json counts more than the archive holds), `cut_at_end` (the last bytes
missing: every member whole, the bz2 end marker gone), `refused` (403 for the day's archive);
and, no fault, `two_streams` (the archive
as two bz2 streams one after the other, as parallel compressors write it)."""

from __future__ import annotations

import bz2
import io
import json
import re
import tarfile
import threading
from collections import defaultdict
from datetime import UTC, date, datetime

from killstream_workstation.simulators.faults import FaultRates
from killstream_workstation.simulators.http_server import Request, Response, SimulatorServer, json_response

ARCHIVE_PATH = re.compile(r"/killmails/(\d{4})/killmails-(\d{4}-\d{2}-\d{2})\.tar\.bz2")
NOT_FOUND = Response(404, b"Not Found", {"Content-Type": "text/plain"})
MISSING = "missing"
TRUNCATED = "truncated"
NOT_JSON = "not_json"
INVALID = "invalid"
MALFORMED_HASH = "malformed_hash"
UNEXPECTED_MEMBER = "unexpected_member"
SLOW = "slow"
OVERCOUNTED = "overcounted"
CUT_AT_END = "cut_at_end"
TWO_STREAMS = "two_streams"
REFUSED = "refused"
FAULTS = (
    MISSING,
    TRUNCATED,
    NOT_JSON,
    INVALID,
    MALFORMED_HASH,
    UNEXPECTED_MEMBER,
    SLOW,
    OVERCOUNTED,
    CUT_AT_END,
    TWO_STREAMS,
    REFUSED,
)
LAST_MODIFIED = "Mon, 30 Nov 2026 12:00:00 GMT"


def day_of(doc: dict) -> date:
    return datetime.fromisoformat(doc["killmail_time"].replace("Z", "+00:00")).astimezone(UTC).date()


class EverefServer(SimulatorServer):
    """Serves the archives of the days its killmails fall on; every request recorded."""

    def __init__(
        self,
        *,
        seed: int = 0,
        fault_rates: FaultRates | None = None,
        latency: float = 0.0,
        slow_seconds: float = 2.0,
        compresslevel: int = 9,
    ):
        super().__init__(seed=seed, fault_rates=fault_rates, latency=latency)
        self.slow_seconds = slow_seconds
        self.compresslevel = compresslevel
        self.faults_by_day: dict[date, set[str]] = {}
        self._days: dict[date, dict[int, dict]] = defaultdict(dict)
        self._archives: dict[date, bytes] = {}
        self._day_lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"{self.base_url}/killmails"

    def add(self, doc: dict) -> None:
        """A killmail (ESI's body with its `killmail_hash`) into the archive of its UTC day."""
        day = day_of(doc)
        with self._day_lock:
            self._days[day][doc["killmail_id"]] = doc
            self._archives.pop(day, None)

    def add_all(self, docs: list[dict]) -> None:
        for doc in docs:
            self.add(doc)

    def fault(self, day: date, kind: str) -> None:
        if kind not in FAULTS:
            raise ValueError(f"unknown EVE Ref fault {kind!r}; one of {', '.join(FAULTS)}")
        with self._day_lock:
            self.faults_by_day.setdefault(day, set()).add(kind)
            self._archives.pop(day, None)

    def clear_faults(self) -> None:
        with self._day_lock:
            self.faults_by_day.clear()
            self._archives.clear()

    def days(self) -> list[date]:
        with self._day_lock:
            return sorted(self._days)

    def documents(self, day: date) -> list[dict]:
        """The day's killmails as added (before faults), in id order."""
        with self._day_lock:
            return [doc for _, doc in sorted(self._days.get(day, {}).items())]

    def totals(self) -> dict[str, int]:
        with self._day_lock:
            return {
                f"{day:%Y%m%d}": len(docs) + (5 if OVERCOUNTED in self.faults_by_day.get(day, set()) else 0)
                for day, docs in sorted(self._days.items())
            }

    def archive(self, day: date) -> bytes:
        """The day's tar.bz2 as served (faults applied), built once."""
        with self._day_lock:
            cached = self._archives.get(day)
            docs = [doc for _, doc in sorted(self._days.get(day, {}).items())]
            faults = set(self.faults_by_day.get(day, set()))
        if cached is not None:
            return cached
        data = self._build(docs, faults)
        with self._day_lock:
            self._archives[day] = data
        return data

    def archive_requests(self) -> list[Request]:
        return [request for request in self.requests if ARCHIVE_PATH.fullmatch(request.path)]

    def _build(self, docs: list[dict], faults: set[str]) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:bz2", compresslevel=self.compresslevel) as tar:
            for n, doc in enumerate(docs):
                member = {**doc, "http_last_modified": LAST_MODIFIED}
                content = json.dumps(member, separators=(",", ":")).encode()
                if NOT_JSON in faults and n == 0:
                    content = b'{"killmail_id": ' + str(doc["killmail_id"]).encode() + b", <html>"
                if INVALID in faults and n == 1:
                    content = json.dumps({k: v for k, v in member.items() if k != "victim"}).encode()
                if MALFORMED_HASH in faults and n == 2:
                    content = json.dumps({**member, "killmail_hash": "not-a-hash"}).encode()
                _add(tar, f"killmails/{doc['killmail_id']}.json", content)
            if UNEXPECTED_MEMBER in faults:
                _add(tar, "killmails/README.txt", b"not a killmail")
        data = buffer.getvalue()
        if TWO_STREAMS in faults:
            tar_bytes = bz2.decompress(data)
            half = len(tar_bytes) // 2
            data = bz2.compress(tar_bytes[:half], self.compresslevel) + bz2.compress(
                tar_bytes[half:], self.compresslevel
            )
        if CUT_AT_END in faults:
            data = data[:-4]  # the stream CRC: every block decodes, the end is never confirmed
        if TRUNCATED in faults:
            data = data[: int(len(data) * 0.6)]
        return data

    def respond(self, request: Request) -> Response:
        if not request.headers.get("User-Agent", "").strip():
            return Response(403, b"Forbidden: send a descriptive User-Agent", {"Content-Type": "text/plain"})
        if request.path == "/killmails/totals.json":
            return json_response(self.totals())
        match = ARCHIVE_PATH.fullmatch(request.path)
        if not match:
            return NOT_FOUND
        try:
            day = date.fromisoformat(match[2])
        except ValueError:
            return NOT_FOUND
        with self._day_lock:
            known = day in self._days and match[1] == f"{day:%Y}"
            faults = set(self.faults_by_day.get(day, set()))
        if not known or MISSING in faults:
            return NOT_FOUND
        if REFUSED in faults:
            return Response(403, b"Forbidden: too many requests from you", {"Content-Type": "text/plain"})
        if SLOW in faults and not self.pause(self.slow_seconds):
            return NOT_FOUND
        return Response(200, self.archive(day), {"Content-Type": "application/x-bzip2"})


def _add(tar: tarfile.TarFile, name: str, content: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    info.mtime = 1_796_040_000
    tar.addfile(info, io.BytesIO(content))
