"""The reconciler: each UTC day of a window checked against zKillboard's history, what is missing
recovered, the result recorded per day (docs/protocols.md, "R2Z2 history").

For each day:
1. zKillboard's count (totals.json, one request for the whole window) against the killmails
   stored for that day (one query for the whole window). A day whose counts agree and whose
   list was already checked, or that nothing changed since a check that settled it, is done:
   no download.
2. Otherwise the day list (id → hash), and in one query the ids not stored.
3. Those not known to be lost for good (`killmail_failures`: ESI said invalid…) are recovered:
   many (≥ the raw threshold) from the raw day file, the rest few by few (the queue, or the
   fetcher's core from the CLI).
4. The day's row in `reconciliation`, and what it still lacks, with why, in
   `reconciliation_missing`.

A file that cannot be read is an error for its day; the other days go on. A 403 ends the run."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import TypeVar

import boto3

from killstream.config import ReconcilerConfig
from killstream.errors import REMAINING_TIME, SOURCE_REFUSED, StopTick
from killstream.esi.killmails import KillmailClient
from killstream.fetcher.batch import Fetcher
from killstream.fetcher.dead_letters import AWS_CLIENT_CONFIG, DeadLetterQueue
from killstream.http.gate import Limits
from killstream.observability import Metric, MetricUnit, logger, metrics
from killstream.poller.sink import SqsSink
from killstream.reconcile.history import HistoryClient, HistoryError, HistoryRefused
from killstream.reconcile.recovery import (
    QUEUED,
    SOURCE,
    FailuresTableOnly,
    FetcherRecovery,
    FewRecovery,
    QueueRecovery,
    Unrecovered,
    Wanted,
    recover_from_raw,
)
from killstream.reconcile.store import DayRecord, MissingKillmail, ReconciliationStore, WindowDay
from killstream.storage.connection import Database
from killstream.storage.failures import known_failures

T = TypeVar("T")
DAY_RESERVE_SECONDS = 90.0
"""No day is started with less time left than this: a raw day file can take a minute."""
FINISH_RESERVE_SECONDS = 30.0
"""No request starts with less time left than this: the day's record must still be written."""
NOT_IN_TOTALS = "totals.json has no count for this day yet (zKillboard adds a day hours after it ends)"
SETTLED_DETAIL = "; not asked for again while zKillboard lists this hash"


class Status(StrEnum):
    COMPLETE = "complete"  # every listed killmail is stored
    RECOVERING = "recovering"  # some are on their way (queued) or may still come (a transient failure)
    INCOMPLETE = "incomplete"  # what is missing cannot be had (ESI said invalid, malformed hash, ...)
    ERROR = "error"  # the day's history could not be read


@dataclass
class DayCheck:
    """What checking one day found and did: the day's record."""

    day: date
    expected: int | None
    stored_before: int
    stored: int
    status: Status = Status.ERROR
    listed: int | None = None
    unlisted: int = 0
    missing: int = 0
    recovered: int = 0
    enqueued: int = 0
    still_missing: int = 0
    missing_rows: list[MissingKillmail] | None = None
    """What the day still lacks (None: unchanged since the last check, rows kept)."""
    method: str | None = None
    errors: list[str] = field(default_factory=list)
    list_checked_at: datetime | None = None
    incomplete_runs: int = 0
    downloaded: list[str] = field(default_factory=list)
    """The files read for this day: "list", "raw"."""

    def record(self, source: str, checked_at: datetime) -> DayRecord:
        return DayRecord(
            source=source,
            day=self.day,
            status=self.status.value,
            expected=self.expected,
            listed=self.listed,
            unlisted=self.unlisted,
            stored_before=self.stored_before,
            stored=self.stored,
            missing=self.missing,
            recovered=self.recovered,
            enqueued=self.enqueued,
            still_missing=self.still_missing,
            method=self.method,
            error="; ".join(self.errors)[:2000] or None,
            list_checked_at=self.list_checked_at,
            incomplete_runs=self.incomplete_runs,
            checked_at=checked_at,
        )

    def reasons(self) -> dict[str, int]:
        return dict(Counter(row.reason for row in self.missing_rows or []))


@dataclass
class RunReport:
    checks: list[DayCheck] = field(default_factory=list)
    not_checked: list[date] = field(default_factory=list)
    requests: int = 0
    history_errors: int = 0
    stopped_because: str | None = None
    dry_run: bool = False

    @property
    def days_incomplete(self) -> int:
        return sum(1 for check in self.checks if check.status is not Status.COMPLETE)

    @property
    def days_still_incomplete(self) -> int:
        return sum(1 for check in self.checks if check.incomplete_runs >= 2)

    def summary(self) -> dict:
        return {
            "days_checked": len(self.checks),
            "days_complete": sum(1 for check in self.checks if check.status is Status.COMPLETE),
            "days_incomplete": self.days_incomplete,
            "days_still_incomplete": self.days_still_incomplete,
            "killmails_missing": sum(check.missing for check in self.checks),
            "killmails_recovered": sum(check.recovered for check in self.checks),
            "killmails_enqueued": sum(check.enqueued for check in self.checks),
            "still_missing": sum(check.still_missing for check in self.checks),
            "history_errors": self.history_errors,
            "requests": self.requests,
            "downloads": sum(len(check.downloaded) for check in self.checks),
            "not_checked": [f"{day}" for day in self.not_checked],
            "stopped_because": self.stopped_because,
            "dry_run": self.dry_run,
            "days": {f"{check.day}": check.status.value for check in self.checks},
        }


def window(days: int, today: date) -> list[date]:
    """The last `days` complete UTC days before `today`, oldest first."""
    return [today - timedelta(days=n) for n in range(days, 0, -1)]


def days_between(first: date, last: date, today: date) -> list[date]:
    """`first` to `last` inclusive, but never `today` or later: its history is not written yet."""
    last = min(last, today - timedelta(days=1))
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Reconciler:
    def __init__(
        self,
        history: HistoryClient,
        database: Database,
        few: FewRecovery,
        *,
        raw_threshold: int,
        source: str = SOURCE,
        now: Callable[[], datetime] = _utc_now,
    ):
        self.history = history
        self.database = database
        self.few = few
        self.raw_threshold = raw_threshold
        self.source = source
        self._now = now

    @classmethod
    def from_config(cls, config: ReconcilerConfig) -> Reconciler:
        history = HistoryClient.build(config.history_url, config.user_agent, pacing_seconds=config.pacing_ms / 1000)
        database = Database(config.database)
        few: FewRecovery
        if config.queue_url:
            few = QueueRecovery(SqsSink(boto3.client("sqs", config=AWS_CLIENT_CONFIG), config.queue_url))
        else:
            dead_letters = DeadLetterQueue(config.dlq_url) if config.dlq_url else FailuresTableOnly()
            esi = KillmailClient(config.esi_url, config.user_agent, compatibility_date=config.esi_compatibility_date)
            fetcher = Fetcher(esi=esi, database=database, dead_letters=dead_letters, parallelism=config.esi_parallelism)
            few = FetcherRecovery(fetcher)
        return cls(history, database, few, raw_threshold=config.raw_threshold)

    def _db(self, operation: Callable[[ReconciliationStore], T]) -> T:
        return self.database.run(lambda conn: operation(ReconciliationStore(conn)))

    def run(
        self,
        days: Sequence[date],
        *,
        time_left: Callable[[], float] = lambda: math.inf,
        stop_requested: Callable[[], bool] | None = None,
        dry_run: bool = False,
    ) -> RunReport:
        """Check these days (each at most once, oldest first); `time_left()`: seconds until the
        run must have ended (a Lambda's remaining time). `stop_requested()` (the local runner's
        Ctrl+C; Lambda has none) ends the run as the end of its time would: nothing it began
        must finish, a day left unchecked is checked on the next run."""
        if stop_requested is not None:
            remaining, stopped = time_left, stop_requested
            time_left = lambda: 0.0 if stopped() else remaining()  # noqa: E731
        report = RunReport(dry_run=dry_run)
        asked = sorted(set(days))
        if not asked:
            return report
        requests_before = self.history.requests
        clock = self.history.gate.clock
        # every request over before the time left, less what ending the run needs (StopTick: REMAINING_TIME)
        limits = Limits(hard_end=lambda: clock() + time_left() - FINISH_RESERVE_SECONDS)
        self.history.gate.begin(limits, lambda until: None)
        totals: dict[date, int] | None = None
        totals_error = ""
        try:
            totals = self.history.totals()
        except HistoryRefused as error:
            totals_error, report.stopped_because = str(error), SOURCE_REFUSED
        except HistoryError as error:
            totals_error = str(error)
        except StopTick as stop:
            report.stopped_because = stop.reason
            totals_error = f"not read ({stop.reason})"
        if totals is None:  # each day of the window gets this error (counted there)
            logger.error(f"zKillboard's history: {totals_error or report.stopped_because}")
        wanted_days = set(asked)
        for window_day in self._db(lambda store: store.window(self.source, asked[0], asked[-1])):
            if window_day.day not in wanted_days:
                continue
            if report.stopped_because is None and time_left() < DAY_RESERVE_SECONDS:
                report.stopped_because = REMAINING_TIME
            if report.stopped_because is not None and totals is not None:
                report.not_checked.append(window_day.day)
                continue
            try:
                check = self._check(window_day, totals, totals_error, time_left, dry_run)
            except HistoryRefused as error:
                report.stopped_because = SOURCE_REFUSED
                check = self._error(window_day, totals.get(window_day.day) if totals else None, str(error))
            except StopTick as stop:
                report.stopped_because = stop.reason
                report.not_checked.append(window_day.day)
                continue
            report.history_errors += len(check.errors)
            if not dry_run:
                self._save(check)
            report.checks.append(check)
            _log_day(check, dry_run)
        report.requests = self.history.requests - requests_before
        if report.not_checked:
            logger.warning(
                "days not checked in this run",
                extra={"days": [f"{day}" for day in report.not_checked], "stopped_because": report.stopped_because},
            )
        logger.info("reconcile done", extra=report.summary())
        if not dry_run:
            _publish(report)
        return report

    def _save(self, check: DayCheck) -> None:
        record = check.record(self.source, self._now())
        self._db(lambda store: store.save(record, check.missing_rows))

    # --- one day ----------------------------------------------------------------------------

    def _check(
        self,
        window_day: WindowDay,
        totals: dict[date, int] | None,
        totals_error: str,
        time_left: Callable[[], float],
        dry_run: bool,
    ) -> DayCheck:
        day, previous = window_day.day, window_day.previous
        if totals is None:
            return self._error(window_day, None, f"totals.json: {totals_error}")
        expected = totals.get(day)
        if expected is None:
            return self._error(window_day, None, NOT_IN_TOTALS)
        unchanged = self._unchanged(window_day, expected)
        if unchanged is not None:
            return unchanged
        try:
            listed = self.history.day_list(day)
        except HistoryRefused:
            raise
        except HistoryError as error:
            return self._error(window_day, expected, str(error))
        check = DayCheck(
            day,
            expected,
            window_day.stored,
            window_day.stored,
            listed=listed.entries,
            unlisted=max(0, expected - listed.entries),
            list_checked_at=self._now(),
            downloaded=["list"],
        )
        hashes = listed.hashes
        # An id whose hash is malformed cannot be asked for; it is missing for good, if missing.
        malformed = {int(key): text for key, text in listed.malformed.items() if key.isdigit() and len(key) <= 18}
        if listed.malformed:
            example = next(iter(listed.malformed.items()))
            check.errors.append(
                f"{len(listed.malformed)} entr{'y' if len(listed.malformed) == 1 else 'ies'} of the day list with "
                f"a malformed id or hash, e.g. {example[0]}: {example[1]}"
            )
        missing = self._db(lambda store: store.not_stored(hashes.keys() | malformed.keys()))
        check.missing = len(missing)
        unrecovered: dict[int, Unrecovered] = {
            killmail_id: Unrecovered("malformed_hash", f"the day list gives {malformed[killmail_id]}", settled=True)
            for killmail_id in missing & malformed.keys()
        }
        failures = self.database.run(lambda conn: known_failures(conn, missing & hashes.keys()))
        for killmail_id, failure in failures.items():
            if failure.killmail_hash == hashes[killmail_id]:
                detail = f"{failure.error_message} (dead-lettered, from {failure.source}){SETTLED_DETAIL}"
                unrecovered[killmail_id] = Unrecovered(failure.error_type, detail, settled=True)
        wanted = [Wanted(i, hashes[i]) for i in sorted(missing) if i in hashes and i not in unrecovered]
        check.recovered += self._confirmed(previous, missing)
        if wanted and dry_run:
            method = "raw" if len(wanted) >= self.raw_threshold else self.few.method
            check.method = method
            for item in wanted:
                unrecovered[item.killmail_id] = Unrecovered("would_recover", f"dry run: {method} would recover it")
        elif wanted:
            unrecovered |= self._recover(check, wanted, time_left)
        still = self._db(lambda store: store.not_stored(missing)) if wanted and not dry_run else set(missing)
        check.recovered += len(missing - still)
        if wanted and not dry_run:
            check.stored = self._db(lambda store: store.stored_count(day))
        rows = []
        for killmail_id in sorted(still):
            reason = unrecovered.get(killmail_id) or Unrecovered(
                "not_stored", "asked for, yet not stored: see the fetcher's log for this killmail"
            )
            given = hashes.get(killmail_id) or malformed.get(killmail_id, "")
            rows.append(MissingKillmail(killmail_id, given[:80], reason.reason, reason.detail))
        check.missing_rows, check.still_missing = rows, len(rows)
        if not rows:
            check.status = Status.COMPLETE
        elif all(unrecovered.get(row.killmail_id, Unrecovered("", "")).settled for row in rows):
            check.status = Status.INCOMPLETE
        else:
            check.status = Status.RECOVERING
        check.incomplete_runs = 0 if check.status is Status.COMPLETE else _runs(previous) + 1
        return check

    def _recover(self, check: DayCheck, wanted: list[Wanted], time_left: Callable[[], float]) -> dict[int, Unrecovered]:
        """Raw file first when many are missing; the rest (or all) few by few."""
        unrecovered: dict[int, Unrecovered] = {}
        methods = []
        few = wanted
        if len(wanted) >= self.raw_threshold:
            raw = recover_from_raw(self.history, self.database, check.day, wanted)
            check.downloaded.append("raw")
            if not raw.present:
                check.errors.append("no raw day file (404): asking for the missing killmails one by one instead")
            else:
                methods.append("raw")
            if raw.error:
                check.errors.append(f"{raw.error}: asking for the rest one by one")
            unrecovered |= raw.unrecovered
            few = [w for w in wanted if w.killmail_id not in raw.written and w.killmail_id not in raw.unrecovered]
        if few:
            asked = self.few.recover(check.day, few, time_left)
            unrecovered |= asked
            methods.append(self.few.method)
            check.enqueued = sum(1 for reason in asked.values() if reason.reason == QUEUED)
        check.method = "+".join(methods) or None
        return unrecovered

    def _unchanged(self, window_day: WindowDay, expected: int) -> DayCheck | None:
        """The day's check when no download is needed: its counts agree and its list was checked
        already, or nothing changed since a check that settled it. None: read the list."""
        previous, stored = window_day.previous, window_day.stored
        if previous is None or previous.list_checked_at is None:
            return None
        check = DayCheck(
            window_day.day,
            expected,
            stored,
            stored,
            listed=previous.listed,
            unlisted=previous.unlisted,
            list_checked_at=previous.list_checked_at,
        )
        same_list = previous.expected == expected
        if stored == expected or (same_list and previous.status == Status.COMPLETE and stored >= previous.stored):
            check.status = Status.COMPLETE
            check.recovered = self._confirmed(previous, None, stored=stored)
            check.missing_rows = []
            return check
        if same_list and previous.status == Status.INCOMPLETE and stored == previous.stored:
            check.status = Status.INCOMPLETE
            check.missing = check.still_missing = previous.still_missing
            check.incomplete_runs = previous.incomplete_runs + 1
            return check  # missing_rows None: the last check's rows stand
        return None

    def _confirmed(self, previous: DayRecord | None, missing: set[int] | None, *, stored: int = 0) -> int:
        """Killmails the last check queued that are stored now (the fetcher brought them)."""
        if previous is None or previous.enqueued == 0 or previous.status != Status.RECOVERING:
            return 0
        queued = {
            row.killmail_id
            for row in self._db(lambda store: store.missing(self.source, previous.day))
            if row.reason == QUEUED
        }
        if missing is None:
            return min(len(queued), max(0, stored - previous.stored))
        return len(queued - missing)

    def _error(self, window_day: WindowDay, expected: int | None, message: str) -> DayCheck:
        previous = window_day.previous
        check = DayCheck(window_day.day, expected, window_day.stored, window_day.stored, errors=[message])
        if previous is not None:
            check.listed, check.unlisted = previous.listed, previous.unlisted
            check.list_checked_at, check.still_missing = previous.list_checked_at, previous.still_missing
        check.incomplete_runs = _runs(previous) + 1
        return check


def _runs(previous: DayRecord | None) -> int:
    return 0 if previous is None else previous.incomplete_runs


def _log_day(check: DayCheck, dry_run: bool) -> None:
    fields = {
        "day": f"{check.day}",
        "status": check.status.value,
        "expected": check.expected,
        "listed": check.listed,
        "unlisted": check.unlisted,
        "stored_before": check.stored_before,
        "stored": check.stored,
        "missing": check.missing,
        "recovered": check.recovered,
        "enqueued": check.enqueued,
        "still_missing": check.still_missing,
        "reasons": check.reasons(),
        "method": check.method,
        "downloaded": check.downloaded,
        "incomplete_runs": check.incomplete_runs,
        "dry_run": dry_run,
    }
    for error in check.errors:
        logger.warning(f"history error for {check.day}: {error}", extra={"day": f"{check.day}", "error": error})
    logger.info(f"day {check.day}: {check.status.value}", extra=fields)


def _publish(report: RunReport) -> None:
    for name, value in (
        (Metric.DAYS_CHECKED, len(report.checks)),
        (Metric.KILLMAILS_MISSING, sum(check.missing for check in report.checks)),
        (Metric.KILLMAILS_RECOVERED, sum(check.recovered for check in report.checks)),
        (Metric.DAYS_INCOMPLETE, report.days_incomplete),
        (Metric.DAYS_STILL_INCOMPLETE, report.days_still_incomplete),
        (Metric.HISTORY_ERRORS, report.history_errors),
        (Metric.HISTORY_REQUESTS, report.requests),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
