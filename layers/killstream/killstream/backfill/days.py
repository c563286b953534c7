"""A backfill: every killmail of a range of UTC days from a public archive into PostgreSQL
(docs/protocols.md, "EVE Ref archives").

For each day:
1. The archive's count (totals.json, one request for the range) against the killmails stored for
   that day (one query for the range). A day with at least as many stored is done: no download.
2. Otherwise the ids stored for the day (one query), then the archive streamed entry by entry: a
   stored id is skipped before its body is even parsed (its zkb untouched); the rest validated
   with the fetcher's model and written in large COPY batches through the batch writer, by a
   writer thread while the next batch is decompressed and parsed. At most two batches wait.
3. The day's row in `reconciliation` (source `everef` or `zkillboard`), and the killmails it
   could not store, with why, in `reconciliation_missing` — the reconciler's table, so
   `reconcile` and `backfill` read completeness the same way.

A killmail that cannot be stored is an error for it alone; a day that cannot be read is an error
for that day; the other days go on. A killed run leaves its committed batches: run again, it
skips what is stored and nothing doubles (the writer's primary keys)."""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum

from psycopg2.extensions import connection

from killstream.backfill.archives import (
    EVEREF,
    SOURCES,
    Archive,
    ArchiveError,
    ArchiveRefused,
    EntryError,
    EverefArchive,
    ZkillboardArchive,
)
from killstream.config import BackfillConfig
from killstream.errors import PermanentError, StopTick
from killstream.fetcher.batch import write_records
from killstream.observability import Metric, MetricUnit, logger, metrics
from killstream.reconcile.history import HistoryClient
from killstream.reconcile.store import DayRecord, MissingKillmail, ReconciliationStore, day_start
from killstream.storage.connection import Database
from killstream.storage.failures import KillmailFailure, remember_failures
from killstream.storage.writer import KillmailRecord, Outcome

BATCH = 1_000
"""Killmails per write: large COPY batches (a few MB of rows), two in flight at most."""
HISTORY_PACING = 1.0
"""Seconds between zKillboard requests of one worker, as the reconciler's (R2Z2 allows ~15-20 a second)."""
SHOWN_ERRORS = 5
"""Killmail errors named in the day's error text (the table lists them all)."""


class DayStatus(StrEnum):
    COMPLETE = "complete"  # stored ≥ the archive's count, and nothing in it failed
    INCOMPLETE = "incomplete"  # read whole, yet some killmails could not be stored
    ERROR = "error"  # the archive could not be read (whole, or at all)


@dataclass
class DayResult:
    """What backfilling one day found and did: the day's record."""

    day: date
    expected: int | None
    stored_before: int
    stored: int = 0
    status: DayStatus = DayStatus.ERROR
    skipped: bool = False
    """Complete before the run: nothing downloaded."""
    read: int = 0
    """Entries read from the archive."""
    already_stored: int = 0
    inserted: int = 0
    duplicates: int = 0
    failed: list[MissingKillmail] = field(default_factory=list)
    """The killmails that could not be stored, with why."""
    unnamed: list[str] = field(default_factory=list)
    """Entries that name no killmail id (an unexpected member), with why."""
    error: str | None = None
    seconds: float = 0.0
    downloaded_bytes: int = 0

    def record(self, source: str, checked_at: datetime, previous: DayRecord | None) -> DayRecord:
        errors = [self.error] if self.error else []
        if self.failed:
            reasons = Counter(row.reason for row in self.failed)
            shown = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
            errors.append(f"{len(self.failed)} killmail(s) not stored ({shown})")
        if self.unnamed:
            errors.append(
                f"{len(self.unnamed)} entr{'y' if len(self.unnamed) == 1 else 'ies'} naming no killmail, "
                f"e.g. {self.unnamed[0]}"
            )
        incomplete_runs = 0 if self.status is DayStatus.COMPLETE else (previous.incomplete_runs if previous else 0) + 1
        return DayRecord(
            source=source,
            day=self.day,
            status=self.status.value,
            expected=self.expected,
            listed=None if self.skipped else self.read,
            unlisted=max(0, (self.expected or 0) - self.read) if not self.skipped else 0,
            stored_before=self.stored_before,
            stored=self.stored,
            missing=0 if self.skipped else self.read - self.already_stored,
            recovered=self.inserted,
            enqueued=0,
            still_missing=len(self.failed),
            method=None if self.skipped else source,
            error="; ".join(errors)[:2000] or None,
            list_checked_at=previous.list_checked_at if previous else None,
            incomplete_runs=incomplete_runs,
            checked_at=checked_at,
        )

    def summary(self) -> dict:
        return {
            "day": f"{self.day}",
            "status": self.status.value,
            "skipped": self.skipped,
            "expected": self.expected,
            "stored_before": self.stored_before,
            "stored": self.stored,
            "read": self.read,
            "already_stored": self.already_stored,
            "inserted": self.inserted,
            "failed": len(self.failed),
            "unnamed": len(self.unnamed),
            "reasons": dict(Counter(row.reason for row in self.failed)),
            "error": self.error,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class BackfillReport:
    days: list[DayResult] = field(default_factory=list)
    not_done: list[date] = field(default_factory=list)
    stopped_because: str | None = None
    requests: int = 0
    seconds: float = 0.0

    @property
    def failed_days(self) -> list[DayResult]:
        return [result for result in self.days if result.status is not DayStatus.COMPLETE]

    def summary(self) -> dict:
        inserted = sum(result.inserted for result in self.days)
        return {
            "days": len(self.days),
            "days_complete": sum(1 for result in self.days if result.status is DayStatus.COMPLETE),
            "days_skipped": sum(1 for result in self.days if result.skipped),
            "days_failed": len(self.failed_days),
            "killmails_read": sum(result.read for result in self.days),
            "killmails_inserted": inserted,
            "killmails_already_stored": sum(result.already_stored for result in self.days),
            "killmail_errors": sum(len(result.failed) + len(result.unnamed) for result in self.days),
            "downloads": sum(1 for result in self.days if not result.skipped),
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "killmails_per_second": round(inserted / self.seconds, 1) if self.seconds > 0 else 0.0,
            "not_done": [f"{day}" for day in self.not_done],
            "stopped_because": self.stopped_because,
            "status": {f"{result.day}": result.status.value for result in self.days},
        }


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def stored_ids(conn: connection, day: date) -> set[int]:
    """The ids of the killmails stored for this UTC day: one query."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT killmail_id FROM killmails WHERE killmail_time >= %s AND killmail_time < %s",
            (day_start(day), day_start(day + timedelta(days=1))),
        )
        return {row[0] for row in cur.fetchall()}


class _Writer:
    """Batches written by a thread of their own through the batch writer, while the caller
    decompresses and parses the next one: at most `depth` batches wait."""

    def __init__(self, database: Database, result: DayResult, source: str, depth: int = 1):
        self.database = database
        self.result = result
        self.source = source
        self.failures: list[KillmailFailure] = []
        self._queue: queue.Queue[list[KillmailRecord] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="backfill-writer", daemon=True)
        self._thread.start()

    def put(self, batch: list[KillmailRecord]) -> None:
        self._raise()
        self._queue.put(batch)

    def close(self) -> None:
        """Wait for every batch given; re-raise what the writer failed with."""
        self._queue.put(None)
        self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain: the caller sees the error at its next put() or close()
            try:
                self._write(batch)
            except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
                self._error = error

    def _write(self, batch: list[KillmailRecord]) -> None:
        result = self.result
        for record, outcome in zip(batch, write_records(self.database, batch), strict=True):
            if isinstance(outcome, PermanentError):
                result.failed.append(
                    MissingKillmail(record.killmail_id, record.killmail_hash, outcome.error_type, outcome.message)
                )
                self.failures.append(_failure(record.killmail_id, record.killmail_hash, self.source, outcome))
            elif outcome is Outcome.INSERTED:
                result.inserted += 1
            else:
                result.duplicates += 1


def _failure(killmail_id: int, killmail_hash: str, source: str, error: PermanentError | EntryError) -> KillmailFailure:
    if isinstance(error, EntryError):
        return KillmailFailure(killmail_id, killmail_hash or "", source, error.reason, error.detail)
    return KillmailFailure(killmail_id, killmail_hash, source, error.error_type, error.message)


class Backfill:
    """Days from one archive into one database. `parallel` days at a time, each with a client
    and a database connection of its own (`make_archive`, `make_database`)."""

    def __init__(
        self,
        make_archive: Callable[[], Archive],
        make_database: Callable[[], Database],
        *,
        parallel: int = 2,
        batch_size: int = BATCH,
        now: Callable[[], datetime] = _utc_now,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.make_archive = make_archive
        self.make_database = make_database
        self.parallel = max(1, parallel)
        self.batch_size = batch_size
        self._now = now
        self._clock = clock
        self._workers: list[tuple[Archive, Database]] = []
        """Every (client, connection) pair made; those not in use are `_idle`, kept for the next
        day and the next run (a warm Lambda reuses its connection)."""
        self._idle: list[tuple[Archive, Database]] = []
        self._lock = threading.Lock()
        self.stop_reason: str | None = None
        """Set (by a refusal, or by the caller) to start no further day."""
        with self._worker() as (archive, _):
            self.source = archive.source

    @classmethod
    def from_config(cls, config: BackfillConfig, source: str, *, parallel: int = 2) -> Backfill:
        """EVE Ref's archives (EVEREF_URL) or zKillboard's raw day files (HISTORY_URL), politely:
        the shared HTTP client's User-Agent, timeouts and backoff, `parallel` days at a time."""
        if source not in SOURCES:
            raise ValueError(f"unknown archive {source!r}: one of {', '.join(SOURCES)}")

        def archive() -> Archive:
            if source == EVEREF:
                return EverefArchive.build(config.everef_url, config.user_agent)
            history = HistoryClient.build(config.history_url, config.user_agent, pacing_seconds=HISTORY_PACING)
            return ZkillboardArchive(history)

        return cls(archive, lambda: Database(config.database), parallel=parallel)

    @contextmanager
    def _worker(self) -> Iterator[tuple[Archive, Database]]:
        """A client and a connection of its own for one day (or the plan), made when none is idle."""
        with self._lock:
            pair = self._idle.pop() if self._idle else None
        if pair is None:
            pair = (self.make_archive(), self.make_database())
            with self._lock:
                self._workers.append(pair)
        try:
            yield pair
        finally:
            with self._lock:
                self._idle.append(pair)

    def close(self) -> None:
        with self._lock:
            for _, database in self._workers:
                database.close()

    @property
    def requests(self) -> int:
        with self._lock:
            return sum(archive.requests for archive, _ in self._workers)

    # --- planning ----------------------------------------------------------------------------

    def totals(self) -> tuple[dict[date, int] | None, str | None]:
        """The archive's count per day (one request), or None and why it could not be read."""
        with self._worker() as (archive, _):
            try:
                return archive.totals(), None
            except ArchiveError as error:
                if isinstance(error, ArchiveRefused):
                    self.stop_reason = "source_refused"
                return None, str(error)
            except StopTick as stop:
                self.stop_reason = stop.reason
                return None, f"totals.json not read ({stop.reason})"

    def plan(
        self, days: Sequence[date], totals: dict[date, int] | None = None
    ) -> tuple[dict[date, int] | None, str | None, dict[date, tuple[int, DayRecord | None]]]:
        """The archive's totals (None and why, when they cannot be read; no request when they are
        given) and, per day, what is stored and the day's last record: one query for the range."""
        problem = None
        if totals is None:
            totals, problem = self.totals()
        asked = sorted(set(days))
        with self._worker() as (_, database):
            stored = self._stored(database, asked)
        return totals, problem, stored

    def _stored(self, database: Database, asked: list[date]) -> dict[date, tuple[int, DayRecord | None]]:
        window = database.run(lambda conn: ReconciliationStore(conn).window(self.source, asked[0], asked[-1]))
        wanted = set(asked)
        return {w.day: (w.stored, w.previous) for w in window if w.day in wanted}

    # --- the run -----------------------------------------------------------------------------

    def run(
        self,
        days: Sequence[date],
        *,
        on_day: Callable[[DayResult], None] = lambda result: None,
        on_progress: Callable[[int], None] = lambda killmails: None,
        should_stop: Callable[[], str | None] = lambda: None,
        totals: dict[date, int] | None = None,
    ) -> BackfillReport:
        """Backfill these days (each once, oldest first). `on_day` sees each day's result as it
        ends, `on_progress` each batch's killmails as they are parsed; `should_stop()` returning a
        reason starts no further day (a Lambda's remaining time). `totals`: the archive's counts
        when the caller has them (the state machine's plan step read them once for the range);
        a day they do not count is downloaded to find out."""
        report = BackfillReport()
        self.stop_reason = None  # a warm Lambda's last run does not stop this one (the gate keeps refusals)
        asked = sorted(set(days))
        if not asked:
            return report
        started = self._clock()
        requests_before = self.requests
        totals, totals_problem, stored = self.plan(asked, totals)
        if totals is None:
            logger.warning(f"{self.source} totals: {totals_problem}; every day is downloaded to find out")
            totals = {}

        def one(day: date) -> DayResult | None:
            reason = self.stop_reason or should_stop()
            if reason is not None:
                self.stop_reason = reason
                return None
            count, previous = stored.get(day, (0, None))
            result = self.day(day, totals.get(day), count, previous, on_progress)
            on_day(result)
            return result

        with ThreadPoolExecutor(self.parallel, thread_name_prefix="backfill-day") as pool:
            try:
                for day, result in zip(asked, pool.map(one, asked), strict=True):
                    if result is None:
                        report.not_done.append(day)
                    else:
                        report.days.append(result)
            except BaseException:  # Ctrl+C, a database lost: no further day starts; those running end
                self.stop_reason = self.stop_reason or "interrupted"
                raise
        report.stopped_because = self.stop_reason
        report.requests = self.requests - requests_before
        report.seconds = self._clock() - started
        logger.info(f"backfill from {self.source} done", extra=report.summary())
        return report

    def day(
        self,
        day: date,
        expected: int | None,
        stored_before: int,
        previous: DayRecord | None,
        on_progress: Callable[[int], None] = lambda killmails: None,
    ) -> DayResult:
        """One day: skipped when complete, else streamed and written; recorded either way."""
        with self._worker() as (archive, database):
            return self._day(archive, database, day, expected, stored_before, previous, on_progress)

    def _day(
        self,
        archive: Archive,
        database: Database,
        day: date,
        expected: int | None,
        stored_before: int,
        previous: DayRecord | None,
        on_progress: Callable[[int], None],
    ) -> DayResult:
        started = self._clock()
        result = DayResult(day, expected, stored_before, stored=stored_before)
        if expected is not None and stored_before >= expected:
            result.status, result.skipped = DayStatus.COMPLETE, True
        else:
            self._stream(archive, database, result, on_progress)
        result.seconds = self._clock() - started
        record = result.record(self.source, self._now(), previous)
        missing = list({row.killmail_id: row for row in result.failed}.values())  # an id given twice: once
        database.run(lambda conn: ReconciliationStore(conn).save(record, missing))
        _log_day(result, self.source)
        return result

    def _stream(
        self, archive: Archive, database: Database, result: DayResult, on_progress: Callable[[int], None]
    ) -> None:
        day = result.day
        known = database.run(lambda conn: stored_ids(conn, day))
        writer = _Writer(database, result, archive.source)
        failures = writer.failures
        batch: list[KillmailRecord] = []
        try:
            try:
                with archive.day(day) as entries:
                    for entry in entries:
                        result.read += 1
                        if entry.killmail_id in known:
                            result.already_stored += 1
                            continue
                        try:
                            record = archive.record(entry)
                        except EntryError as error:
                            self._entry_failed(result, failures, entry.killmail_id, entry.name, error, archive.source)
                            continue
                        batch.append(record)
                        if len(batch) >= self.batch_size:
                            on_progress(len(batch))
                            writer.put(batch)
                            batch = []
            except ArchiveRefused as error:
                result.error = str(error)
                self.stop_reason = "source_refused"
            except ArchiveError as error:
                result.error = str(error)
            except StopTick as stop:
                result.error = f"not downloaded: {stop.detail or stop.reason}"
                self.stop_reason = stop.reason
            if batch:
                on_progress(len(batch))
                writer.put(batch)
        finally:
            writer.close()  # every batch given is written (or its error raised) before the record
            remember_failures(database, failures)
        result.stored = database.run(lambda conn: ReconciliationStore(conn).stored_count(day))
        if result.error is not None:
            result.status = DayStatus.ERROR
        elif result.failed:
            result.status = DayStatus.INCOMPLETE
        elif result.expected is not None and result.stored < result.expected:
            result.status = DayStatus.INCOMPLETE
            result.error = (
                f"the archive counts {result.expected:,} killmails and holds {result.read:,}; "
                f"{result.stored:,} stored for the day"
            )
        else:
            result.status = DayStatus.COMPLETE

    @staticmethod
    def _entry_failed(
        result: DayResult,
        failures: list[KillmailFailure],
        killmail_id: int | None,
        name: str,
        error: EntryError,
        source: str,
    ) -> None:
        if len(result.failed) < SHOWN_ERRORS:
            logger.warning(f"{source} {result.day}: {name}: {error}", extra={"day": f"{result.day}", "member": name})
        if killmail_id is None:
            result.unnamed.append(f"{error.reason}: {error.detail}"[:300])
            return
        result.failed.append(MissingKillmail(killmail_id, error.killmail_hash[:80], error.reason, error.detail))
        failures.append(_failure(killmail_id, error.killmail_hash, source, error))


def _log_day(result: DayResult, source: str) -> None:
    if result.error:
        logger.warning(f"backfill {source} {result.day}: {result.error}", extra={"day": f"{result.day}"})
    logger.info(f"backfill {source} {result.day}: {result.status.value}", extra=result.summary())


def publish(report: BackfillReport, *, errors_retried: bool = False) -> None:
    """The run's metrics (the backfill Lambda publishes them once per day it runs). With
    `errors_retried` a day whose archive could not be read is not counted failed yet: the state
    machine tries it again, and counts it (record_failed_day) once its retries are spent."""
    failed = [r for r in report.failed_days if not (errors_retried and r.status is DayStatus.ERROR)]
    for name, value in (
        (Metric.BACKFILL_DAYS, len(report.days)),
        (Metric.BACKFILL_DAYS_FAILED, len(failed)),
        (Metric.BACKFILL_KILLMAILS_STORED, sum(result.inserted for result in report.days)),
        (Metric.BACKFILL_KILLMAIL_ERRORS, sum(len(r.failed) + len(r.unnamed) for r in report.days)),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def record_failed_day(day: object, source: object, error: object) -> dict:
    """A day the state machine gave up on (its retries spent): logged, counted once as
    BackfillDaysFailed, and its error result returned — the run goes on."""
    cause = error.get("Cause") if isinstance(error, dict) else None
    kind = error.get("Error") if isinstance(error, dict) else None
    message = f"{kind}: {cause}" if kind else f"{error}"
    logger.error(f"backfill {source} {day}: failed after its retries: {message[:1000]}", extra={"day": f"{day}"})
    metrics.add_metric(name=Metric.BACKFILL_DAYS_FAILED, unit=MetricUnit.Count, value=1)
    return {"day": f"{day}", "source": f"{source}", "status": DayStatus.ERROR.value, "error": message[:2000]}
