"""zKillboard's history files (docs/protocols.md, "R2Z2 history"): `totals.json` (killmails per
UTC day), the day lists (`YYYYMMDD.json`: id → hash) and the raw day files
(`raw/YYYYMMDD.json`: id → ESI killmail). Read through the poller's HTTP client and gate (the
User-Agent, timeouts, retries with backoff, pacing), every file streamed and parsed entry by
entry, none held whole. No HTTP cache is kept: the files are served with a one-year max-age,
yet days are uploaded again when late killmails arrive.

What cannot be read is a `HistoryError` for that file alone; a 403 is `HistoryRefused`: the
run asks nothing more."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from killstream.http.client import HttpClient, Interrupted, Streamed
from killstream.http.files import FileReader
from killstream.http.gate import Gate
from killstream.killmail import HASH_RE
from killstream.reconcile.jsonstream import MalformedJson, object_entries

TOTALS_SECONDS = 60.0
DAY_LIST_SECONDS = 120.0
"""A day list (~15,000 ids, about 1 MB) must arrive within this."""
RAW_FILE_SECONDS = 600.0
"""A raw day file (tens of MB) must arrive within this."""
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
"""Per read, not per file: the whole file is bounded by the seconds above."""
_DAY_KEY = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_ID = re.compile(r"^[1-9][0-9]{0,18}$")


class HistoryError(Exception):
    """A history file could not be read (whole, or at all); the message says why."""


class HistoryRefused(HistoryError):
    """zKillboard refused service (403): nothing more may be asked in this run."""


def day_key(day: date) -> str:
    return f"{day:%Y%m%d}"


@dataclass
class DayList:
    """A day's id → hash list: the entries that can be used, and those that cannot (an id that
    is not a killmail id, a hash that is not 40 hex), as given."""

    day: date
    hashes: dict[int, str] = field(default_factory=dict)
    malformed: dict[str, str] = field(default_factory=dict)

    @property
    def entries(self) -> int:
        return len(self.hashes) + len(self.malformed)


class HistoryClient:
    def __init__(self, client: HttpClient, base_url: str):
        self.client = client
        self.gate = client.gate
        self.base_url = base_url.rstrip("/")
        self._files = FileReader(client, "zKillboard", unavailable=HistoryError, refused=HistoryRefused)

    @classmethod
    def build(
        cls,
        base_url: str,
        user_agent: str,
        *,
        pacing_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> HistoryClient:
        gate = Gate(pacing_seconds, clock=clock, sleep=sleep)
        client = HttpClient(gate, user_agent, connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT)
        return cls(client, base_url)

    @property
    def requests(self) -> int:
        """Requests let through so far (retries included)."""
        return self.gate.started

    def totals(self) -> dict[date, int]:
        """zKillboard's killmail count per UTC day."""
        with self._open(f"{self.base_url}/totals.json", TOTALS_SECONDS) as answer:
            if answer.status != 200:
                raise HistoryError(f"totals.json: HTTP {answer.status} {answer.text(200)}".strip())
            totals: dict[date, int] = {}
            for key, count in self._entries(answer, "totals.json"):
                day = _day(key)
                if day is not None and type(count) is int and count >= 0:
                    totals[day] = count
        return totals

    def day_list(self, day: date) -> DayList:
        """The day's ids and hashes, read as a stream."""
        name = f"{day_key(day)}.json"
        with self._open(f"{self.base_url}/{name}", DAY_LIST_SECONDS) as answer:
            if answer.status == 404:
                raise HistoryError(f"no day list {name} (404)")
            if answer.status != 200:
                raise HistoryError(f"day list {name}: HTTP {answer.status} {answer.text(200)}".strip())
            listed = DayList(day)
            for key, value in self._entries(answer, f"day list {name}"):
                if _ID.match(key) and isinstance(value, str) and HASH_RE.match(value):
                    listed.hashes[int(key)] = value
                else:
                    listed.malformed[key[:40]] = repr(value)[:80]
        return listed

    @contextmanager
    def raw_day(self, day: date) -> Iterator[Iterator[tuple[str, Any]] | None]:
        """The raw day file's (id, ESI killmail) entries as they arrive, or None when the day has
        none (404: days before 2026-07 may not). Iterating raises HistoryError when the file is
        cut off or broken; the entries before that point were good."""
        name = f"raw/{day_key(day)}.json"
        with self._open(f"{self.base_url}/{name}", RAW_FILE_SECONDS) as answer:
            if answer.status == 404:
                yield None
                return
            if answer.status != 200:
                raise HistoryError(f"raw file {name}: HTTP {answer.status} {answer.text(200)}".strip())
            yield self._entries(answer, f"raw file {name}")

    def _entries(self, answer: Streamed, what: str) -> Iterator[tuple[str, Any]]:
        try:
            yield from object_entries(answer.chunks())
        except MalformedJson as error:
            raise HistoryError(f"{what} does not parse: {error}") from None
        except Interrupted as error:
            raise HistoryError(f"{what} cut off: {error}") from None

    def _open(self, url: str, seconds: float) -> AbstractContextManager[Streamed]:
        """The answer to GET url, through the gate (429 waited out, 403 refusing the run)."""
        return self._files.open(url, seconds)


def _day(key: str) -> date | None:
    match = _DAY_KEY.match(key)
    if not match:
        return None
    try:
        return datetime(int(match[1]), int(match[2]), int(match[3])).date()
    except ValueError:
        return None
