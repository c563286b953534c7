"""How missing killmails are brought home (docs/protocols.md, "R2Z2 history", "Recovery").

- Few missing: as metadata-only packages (`"source": "history"`, no zkb) on the killmail queue,
  so the fetcher gets them from ESI within its rate cap, with its DLQ and metrics
  (`QueueRecovery`); or, where no queue is configured (the CLI), through the fetcher's own core
  called here (`FetcherRecovery`: its ESI client, its batch writer, its failure records).
- Many missing: straight from the raw day file, streamed, each wanted killmail validated and
  written through the batch writer in batches, no ESI call (`recover_from_raw`).

Each returns, per killmail it could not store, why (`Unrecovered`); recovered ones are simply
stored (the caller asks the database)."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from killstream.errors import KillmailValidationError, PermanentError
from killstream.fetcher.batch import Fetcher, write_records
from killstream.fetcher.dead_letters import DeadLetter, DeadLetterQueue
from killstream.fetcher.messages import Disposition, Message
from killstream.killmail import Killmail, parse_killmail, parse_zkb
from killstream.observability import logger
from killstream.package import Package
from killstream.poller.sink import SendReport, SqsSink
from killstream.reconcile.history import HistoryClient, HistoryError, HistoryRefused
from killstream.storage.connection import Database
from killstream.storage.failures import KillmailFailure, remember_failures
from killstream.storage.writer import KillmailRecord

SOURCE = "history"
"""The `source` of packages and rows the reconciler recovers."""
NO_ZKB = parse_zkb({})
RAW_BATCH = 500
"""Killmails per write from a raw file: large COPY batches, a few MB of rows at a time."""
FETCHER_BATCH = 10
"""Messages per fetcher call, as the killmail queue's event source hands them over."""
QUEUED = "queued"
"""The reason of a killmail put on the queue and not stored yet: the fetcher has it."""


@dataclass(frozen=True)
class Wanted:
    killmail_id: int
    killmail_hash: str


@dataclass(frozen=True)
class Unrecovered:
    """Why a wanted killmail is not stored. `settled`: asking again would give the same answer
    (ESI said invalid, the document fails validation); otherwise a later run may still succeed."""

    reason: str
    detail: str
    settled: bool = False


class FewRecovery(ABC):
    """Recovery of a handful of killmails, each fetched from ESI."""

    method: str

    @abstractmethod
    def recover(self, day: date, wanted: Sequence[Wanted], time_left: Callable[[], float]) -> dict[int, Unrecovered]:
        """Ask for these; what is certainly not stored now, and why."""


def history_package(wanted: Wanted) -> Package:
    """A metadata-only package: the fetcher asks ESI for its killmail (docs/protocols.md, "R2Z2 history")."""
    return Package(killmail_id=wanted.killmail_id, hash=wanted.killmail_hash, zkb={}, source=SOURCE)


class QueueRecovery(FewRecovery):
    """Onto the killmail queue: the fetcher does the rest, within its ESI cap."""

    method = "queue"

    def __init__(self, sink: SqsSink, now: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.sink = sink
        self._now = now

    def recover(self, day: date, wanted: Sequence[Wanted], time_left: Callable[[], float]) -> dict[int, Unrecovered]:
        report = SendReport()
        for item in wanted:
            report.add(self.sink.add(history_package(item)))
        report.add(self.sink.flush())
        since = f"{self._now():%Y-%m-%dT%H:%M:%SZ}"
        queued = Unrecovered(QUEUED, f"on the killmail queue since {since}: the fetcher gets it from ESI")
        refused = Unrecovered("enqueue_failed", "SQS did not take the package; the next run tries again")
        out = {package.killmail_id: queued for package in report.accepted}
        out |= {package.killmail_id: refused for package in report.failed + report.dropped}
        return out


class FailuresTableOnly(DeadLetterQueue):
    """Where the CLI's fetches dead-letter without a DLQ: nowhere but `killmail_failures` (the
    fetcher records every permanent failure there) and the day's `reconciliation_missing` rows."""

    def __init__(self) -> None:
        super().__init__("")

    def send(self, letters: Sequence[DeadLetter]) -> set[str]:
        return set()


class FetcherRecovery(FewRecovery):
    """The fetcher's core, called on history packages as its queue would hand them over."""

    method = "esi"

    def __init__(self, fetcher: Fetcher):
        self.fetcher = fetcher
        self.asked = 0
        """Killmails handed to the fetcher."""
        self.esi_requests = 0
        """Requests its ESI client made (each answer, retries included)."""
        fetcher.esi.session.hooks["response"].append(self._count_request)

    def _count_request(self, response: Any, *args: Any, **kwargs: Any) -> None:
        self.esi_requests += 1

    def recover(self, day: date, wanted: Sequence[Wanted], time_left: Callable[[], float]) -> dict[int, Unrecovered]:
        out: dict[int, Unrecovered] = {}
        for start in range(0, len(wanted), FETCHER_BATCH):
            chunk = wanted[start : start + FETCHER_BATCH]
            messages = [Message(f"{day:%Y%m%d}-{w.killmail_id}", history_package(w).to_body()) for w in chunk]
            self.asked += len(chunk)
            results = self.fetcher.process(messages, time_left=min(time_left(), 60.0))
            for message, item in zip(messages, chunk, strict=True):
                result = results[message.message_id]
                if result.error is not None and result.disposition in (Disposition.DEAD_LETTERED, Disposition.RETRY):
                    out[item.killmail_id] = Unrecovered(
                        result.error.error_type, result.error.message, settled=not result.error.transient
                    )
        return out


@dataclass
class RawOutcome:
    """What reading a raw day file did."""

    present: bool = True
    read: int = 0
    """Entries read (the file is sorted by id; reading stops once every wanted one was seen)."""
    written: set[int] = field(default_factory=set)
    unrecovered: dict[int, Unrecovered] = field(default_factory=dict)
    error: str | None = None


def recover_from_raw(
    history: HistoryClient,
    database: Database,
    day: date,
    wanted: Sequence[Wanted],
    *,
    batch_size: int = RAW_BATCH,
    clock: Callable[[], float] = time.monotonic,
) -> RawOutcome:
    """The wanted killmails from the day's raw file, streamed; written in batches through the
    batch writer (source `history`, no zkb). Memory: one chunk, one entry, one batch."""
    hashes = {w.killmail_id: w.killmail_hash for w in wanted}
    outcome = RawOutcome()
    batch: list[KillmailRecord] = []
    failures: list[KillmailFailure] = []

    def flush() -> None:
        if not batch:
            return
        for record, result in zip(batch, write_records(database, batch), strict=True):
            if isinstance(result, PermanentError):
                outcome.unrecovered[record.killmail_id] = Unrecovered(result.error_type, result.message, settled=True)
                failures.append(_failure(record.killmail_id, record.killmail_hash, result.error_type, result.message))
            else:
                outcome.written.add(record.killmail_id)
        batch.clear()

    started = clock()
    try:
        with history.raw_day(day) as entries:
            if entries is None:
                outcome.present = False
                return outcome
            left = set(hashes)
            for key, document in entries:
                outcome.read += 1
                killmail_id = int(key) if key.isdigit() else None
                if killmail_id not in left:
                    continue
                left.discard(killmail_id)
                try:
                    killmail = _killmail(document, killmail_id)
                except KillmailValidationError as error:
                    reason = f"the raw file's document: {error}"
                    outcome.unrecovered[killmail_id] = Unrecovered("validation_error", reason, settled=True)
                    failures.append(_failure(killmail_id, hashes[killmail_id], "validation_error", reason))
                    continue
                batch.append(KillmailRecord(killmail, hashes[killmail_id], NO_ZKB, SOURCE))
                if len(batch) >= batch_size:
                    flush()
                if not left:
                    break  # sorted by id or not, nothing more is wanted from this file
    except HistoryRefused:
        raise  # the run ends; what was read is written below
    except HistoryError as error:
        outcome.error = str(error)
    finally:
        flush()
        remember_failures(database, failures)
    logger.info(
        "raw day file read",
        extra={
            "day": f"{day}",
            "entries_read": outcome.read,
            "written": len(outcome.written),
            "unrecovered": len(outcome.unrecovered),
            "seconds": round(clock() - started, 3),
            "error": outcome.error,
        },
    )
    return outcome


def _killmail(document: Any, killmail_id: int) -> Killmail:
    killmail = parse_killmail(document)
    if killmail.killmail_id != killmail_id:
        raise KillmailValidationError("killmail_id", f"is {killmail.killmail_id} under the key {killmail_id}")
    return killmail


def _failure(killmail_id: int, killmail_hash: str, error_type: str, message: str) -> KillmailFailure:
    return KillmailFailure(killmail_id, killmail_hash, SOURCE, error_type, message)
