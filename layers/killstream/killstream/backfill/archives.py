"""The two archives a backfill reads, each as a stream of entries for one UTC day (docs/protocols.md,
"EVE Ref archives" and "R2Z2 history"):

- EVE Ref: `{YYYY}/killmails-{YYYY-MM-DD}.tar.bz2`, members `killmails/{id}.json` (ESI's body plus
  `killmail_hash`), and `totals.json`. The download is decompressed as it arrives (bz2, several
  streams allowed) and read as a tar stream one member at a time: memory stays near one
  compressed chunk, one bz2 block and one member, whatever the day's size.
- zKillboard: the day list (id → hash; about 1 MB, held) and the raw day file (id → ESI
  killmail), read entry by entry by issue 13's history client.

An archive yields `Entry`s; `record()` turns one into a validated `KillmailRecord` or raises
`EntryError` (that killmail alone: not JSON, a malformed hash, a body failing validation). A day
that cannot be read (404, truncated, not a tar.bz2) raises `ArchiveError` while iterating; the
entries before that point were good. A 403 is `ArchiveRefused`: the run asks nothing more."""

from __future__ import annotations

import bz2
import json
import re
import tarfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any

from killstream.errors import KillmailValidationError
from killstream.http.client import HttpClient, Interrupted
from killstream.http.files import FileReader
from killstream.http.gate import Gate
from killstream.killmail import HASH_RE, parse_killmail, parse_zkb
from killstream.reconcile.history import HistoryClient, HistoryError, HistoryRefused
from killstream.storage.writer import KillmailRecord

EVEREF = "everef"
ZKILLBOARD = "zkillboard"
SOURCES = (EVEREF, ZKILLBOARD)
NO_ZKB = parse_zkb({})
TOTALS_SECONDS = 60.0
DAY_ARCHIVE_SECONDS = 600.0
"""A day's archive (~3 MB for a 2026 day) must arrive within this."""
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
MAX_MEMBER_BYTES = 32 * 1024 * 1024
"""A member larger than this is refused unread: ESI caps a killmail at 10,000 items (a few MB)."""
BYTES_PER_KILLMAIL = {EVEREF: 200, ZKILLBOARD: 5_100}
"""Download size per killmail, for --dry-run's estimate: a 2026 EVE Ref day is ~3 MB of bz2 for
15,000-25,000 killmails (docs/protocols.md, "EVE Ref archives"); a zKillboard raw day ~76 MB of
JSON for 15,000 (README, Completeness), plus its day list."""
_MEMBER = re.compile(r"^(?:\./)?killmails/([1-9][0-9]{0,18})\.json$")
_DAY_KEY = re.compile(r"^(\d{4})(\d{2})(\d{2})$")


class ArchiveError(Exception):
    """The day's archive could not be read (whole, or at all); the message says why."""


class ArchiveRefused(ArchiveError):
    """The archive refused service (403): nothing more may be asked in this run."""


class EntryError(Exception):
    """One killmail of the archive cannot be stored. `reason`: a short stable word."""

    def __init__(self, reason: str, detail: str, killmail_hash: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.killmail_hash = killmail_hash


@dataclass(frozen=True)
class Entry:
    """One killmail as the archive gives it: its id (None when its name holds none), the name
    it was found under, and its content (bytes for EVE Ref, the parsed body for zKillboard)."""

    name: str
    killmail_id: int | None
    content: Any
    killmail_hash: str | None = None


class Archive(ABC):
    source: str
    """The `source` of the rows it stores, and of its days in the `reconciliation` table."""

    @property
    @abstractmethod
    def requests(self) -> int:
        """Requests let through so far (retries included)."""

    @abstractmethod
    def totals(self) -> dict[date, int]:
        """The archive's killmail count per UTC day."""

    @abstractmethod
    def day(self, day: date) -> AbstractContextManager[Iterator[Entry]]:
        """The day's entries as they arrive; ArchiveError (when opening or iterating) when the
        day cannot be read."""

    @abstractmethod
    def record(self, entry: Entry) -> KillmailRecord:
        """The entry validated (the fetcher's model), or EntryError."""


def parse_totals(entries: Iterable[tuple[str, Any]]) -> dict[date, int]:
    """`{"YYYYMMDD": count}` → {day: count}; keys or counts that are not such are left out."""
    totals: dict[date, int] = {}
    for key, count in entries:
        match = _DAY_KEY.match(key)
        if not match or type(count) is not int or count < 0:
            continue
        try:
            totals[date(int(match[1]), int(match[2]), int(match[3]))] = count
        except ValueError:
            continue
    return totals


def validated(killmail_id: int | None, body: Any, killmail_hash: Any, source: str) -> KillmailRecord:
    """A killmail record from an archive's body and hash, or EntryError naming what is wrong."""
    shown = killmail_hash if isinstance(killmail_hash, str) else ""
    if not isinstance(killmail_hash, str) or not HASH_RE.match(killmail_hash):
        raise EntryError("malformed_hash", f"the hash is {killmail_hash!r:.60}, not 40 hex", shown[:80])
    try:
        killmail = parse_killmail(body)
    except KillmailValidationError as error:
        raise EntryError("validation_error", str(error), killmail_hash) from None
    if killmail_id is not None and killmail.killmail_id != killmail_id:
        raise EntryError(
            "validation_error", f"killmail_id: is {killmail.killmail_id} under the name {killmail_id}", killmail_hash
        )
    return KillmailRecord(killmail, killmail_hash, NO_ZKB, source)


# --- EVE Ref ---------------------------------------------------------------------------------


class _Bz2Reader:
    """The decompressed bytes of a bz2 download as a file tarfile can stream from. Several bz2
    streams one after another are one file (parallel compressors write them); input that ends
    inside a stream is a truncated archive."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self._decompressor = bz2.BZ2Decompressor()
        self._pending = b""
        self.compressed = 0

    def read(self, size: int = -1) -> bytes:
        while True:
            if self._decompressor.eof:
                rest = self._decompressor.unused_data
                if not rest:
                    rest = next(self._chunks, b"")
                    self.compressed += len(rest)
                    if not rest:
                        return b""
                self._decompressor = bz2.BZ2Decompressor()
                self._pending = rest
            if not self._pending and self._decompressor.needs_input:
                self._pending = next(self._chunks, b"")
                self.compressed += len(self._pending)
                if not self._pending:
                    raise ArchiveError("truncated: the bz2 stream ends before its end marker")
            data, self._pending = self._pending, b""
            try:
                out = self._decompressor.decompress(data, max_length=size if size > 0 else -1)
            except OSError as error:
                raise ArchiveError(f"not bz2 data: {error}") from None
            if out:
                return out

    def drain(self) -> None:
        """Read to the end: a stream cut off after the tar's last member is still truncated."""
        while self.read(1 << 20):
            pass


class EverefArchive(Archive):
    """EVE Ref's daily archives under `base_url` (EVEREF_URL)."""

    source = EVEREF

    def __init__(self, client: HttpClient, base_url: str):
        self.client = client
        self.base_url = base_url.rstrip("/")
        self._files = FileReader(client, "EVE Ref", unavailable=ArchiveError, refused=ArchiveRefused)

    @classmethod
    def build(
        cls,
        base_url: str,
        user_agent: str,
        *,
        pacing_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> EverefArchive:
        gate = Gate(pacing_seconds, clock=clock, sleep=sleep)
        return cls(HttpClient(gate, user_agent, connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT), base_url)

    @property
    def requests(self) -> int:
        return self.client.gate.started

    def url(self, day: date) -> str:
        return f"{self.base_url}/{day:%Y}/killmails-{day:%Y-%m-%d}.tar.bz2"

    def totals(self) -> dict[date, int]:
        with self._files.open(f"{self.base_url}/totals.json", TOTALS_SECONDS) as answer:
            if answer.status != 200:
                raise ArchiveError(f"totals.json: HTTP {answer.status} {answer.text(200)}".strip())
            try:
                doc = json.loads(b"".join(answer.chunks()))
            except Interrupted as error:
                raise ArchiveError(f"totals.json cut off: {error}") from None
            except ValueError as error:
                raise ArchiveError(f"totals.json does not parse: {error}") from None
        if not isinstance(doc, dict):
            raise ArchiveError("totals.json is not a JSON object")
        return parse_totals(doc.items())

    @contextmanager
    def day(self, day: date) -> Iterator[Iterator[Entry]]:
        name = f"killmails-{day:%Y-%m-%d}.tar.bz2"
        with self._files.open(self.url(day), DAY_ARCHIVE_SECONDS) as answer:
            if answer.status == 404:
                raise ArchiveError(f"no archive {name} (404)")
            if answer.status != 200:
                raise ArchiveError(f"{name}: HTTP {answer.status} {answer.text(200)}".strip())
            yield self._members(_Bz2Reader(answer.chunks()), name)

    def _members(self, reader: _Bz2Reader, name: str) -> Iterator[Entry]:
        read = 0
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]  # any object with read()
                for member in tar:
                    tar.members.clear()  # stream mode keeps every TarInfo otherwise
                    if not member.isfile():
                        continue
                    match = _MEMBER.match(member.name)
                    killmail_id = int(match[1]) if match else None
                    if member.size > MAX_MEMBER_BYTES:
                        yield Entry(member.name, killmail_id, None)
                        continue
                    handle = tar.extractfile(member)
                    content = handle.read() if handle is not None else b""
                    read += 1
                    yield Entry(member.name, killmail_id, content)
            reader.drain()
        except Interrupted as error:
            raise ArchiveError(f"{name} cut off after {read:,} killmails: {error}") from None
        except ArchiveError as error:
            raise ArchiveError(f"{name} after {read:,} killmails: {error}") from None
        except (tarfile.TarError, EOFError) as error:
            raise ArchiveError(f"{name} is not a readable tar.bz2 after {read:,} killmails: {error}") from None

    def record(self, entry: Entry) -> KillmailRecord:
        if entry.killmail_id is None:
            raise EntryError("unexpected_member", f"{entry.name[:120]!r} is not killmails/<id>.json")
        if entry.content is None:
            raise EntryError("too_large", f"{entry.name} is larger than {MAX_MEMBER_BYTES:,} bytes")
        try:
            doc = json.loads(entry.content)
        except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError too
            raise EntryError("not_json", f"{entry.name} does not parse as JSON: {error}"[:300]) from None
        if not isinstance(doc, dict):
            raise EntryError("not_json", f"{entry.name} is {type(doc).__name__}, not a JSON object")
        killmail_hash = doc.pop("killmail_hash", None)
        doc.pop("http_last_modified", None)  # EVE Ref's, not ESI's
        return validated(entry.killmail_id, doc, killmail_hash, self.source)


# --- zKillboard ------------------------------------------------------------------------------


class ZkillboardArchive(Archive):
    """zKillboard's history (HISTORY_URL): totals, the day list for the hashes, the raw day file
    for the bodies (since 2026-07-01)."""

    source = ZKILLBOARD

    def __init__(self, history: HistoryClient):
        self.history = history

    @property
    def requests(self) -> int:
        return self.history.requests

    def totals(self) -> dict[date, int]:
        try:
            return self.history.totals()
        except HistoryRefused as error:
            raise ArchiveRefused(str(error)) from None
        except HistoryError as error:
            raise ArchiveError(str(error)) from None

    @contextmanager
    def day(self, day: date) -> Iterator[Iterator[Entry]]:
        try:
            listed = self.history.day_list(day)
            hashes: dict[int, str] = dict(listed.hashes)
            with self.history.raw_day(day) as entries:
                if entries is None:
                    raise ArchiveError(f"no raw day file for {day} (404): zKillboard has them since 2026-07-01")
                yield self._entries(entries, hashes, listed.malformed)
        except HistoryRefused as error:
            raise ArchiveRefused(str(error)) from None
        except HistoryError as error:
            raise ArchiveError(str(error)) from None

    @staticmethod
    def _entries(
        entries: Iterator[tuple[str, Any]], hashes: dict[int, str], malformed: dict[str, str]
    ) -> Iterator[Entry]:
        for key, body in entries:
            killmail_id = int(key) if key.isdigit() and len(key) <= 19 else None
            given = hashes.get(killmail_id) if killmail_id is not None else None
            if given is None and key in malformed:
                given = malformed[key]
            yield Entry(key, killmail_id, body, given)

    def record(self, entry: Entry) -> KillmailRecord:
        if entry.killmail_id is None:
            raise EntryError("unexpected_member", f"the raw file's key {entry.name[:60]!r} is no killmail id")
        if entry.killmail_hash is None:
            raise EntryError("not_listed", "in the raw file but not in the day list: no hash to store it with")
        return validated(entry.killmail_id, entry.content, entry.killmail_hash, self.source)
