"""The fetcher's core: one SQS batch of packages in, their killmails stored, one result per message.

A batch costs few round trips whatever its size: every message is parsed and validated first
(a bad one fails alone); one query finds which of the killmails that came without their ESI
document are stored already — those never reach ESI; the rest are fetched from ESI a few at a
time; then every killmail is written in one transaction. Permanent failures are dead-lettered
with their reason; transient ones are handed back for SQS to redeliver."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Callable, Iterable, Mapping, Sequence

import boto3
import psycopg2
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from killstream.config import FetcherConfig
from killstream.storage.connection import Database, DatabaseUnavailable
from killstream.fetcher.esi import EsiClient, FetchError, PermanentError, TransientError
from killstream.killmail import Killmail, KillmailValidationError, Zkb, parse_killmail, parse_zkb
from killstream.observability import MetricUnit, logger, metrics
from killstream.package import InvalidPackage, Package
from killstream import sqs_limits
from killstream.storage.writer import KillmailRecord, KillmailStore, Outcome

# Left for the database write and the DLQ when the ESI fetches run against the clock.
WRITE_RESERVE_SECONDS = 5.0
ERROR_MESSAGE_CHARS = 1000


@dataclass(frozen=True)
class Message:
    """One SQS message: its id (what batchItemFailures names), body, and when it was sent."""

    message_id: str
    body: str
    sent_at: datetime | None = None

    @classmethod
    def from_sqs_record(cls, record: Mapping) -> "Message":
        """From a record of Lambda's SQS event (a plain dict)."""
        sent = (record.get("attributes") or {}).get("SentTimestamp")
        sent_at = datetime.fromtimestamp(int(sent) / 1000, timezone.utc) if sent else None
        return cls(record["messageId"], record["body"], sent_at)


@dataclass(frozen=True)
class ParsedMessage:
    package: Package
    zkb: Zkb
    killmail: Killmail | None


class Disposition(str, Enum):
    SAVED = "saved"                  # stored now
    SKIPPED = "skipped"              # already stored, nothing changed
    UPDATED = "updated"              # already stored, newer zKillboard values applied
    DEAD_LETTERED = "dead_lettered"  # permanent failure, on the DLQ with its reason
    RETRY = "retry"                  # transient failure (or the DLQ refused it): back to the queue


@dataclass(frozen=True)
class RecordResult:
    disposition: Disposition
    killmail_id: int | None = None
    error: FetchError | None = None

    @property
    def retry(self) -> bool:
        return self.disposition is Disposition.RETRY


_DISPOSITION = {Outcome.INSERTED: Disposition.SAVED, Outcome.DUPLICATE: Disposition.SKIPPED,
                Outcome.ZKB_UPDATED: Disposition.UPDATED}


@dataclass
class _Work:
    """One message on its way through the batch."""

    message: Message
    package: Package | None = None
    parsed: ParsedMessage | None = None
    killmail: Killmail | None = None
    outcome: Outcome | None = None
    error: FetchError | None = None

    @property
    def killmail_id(self) -> int | None:
        return self.package.killmail_id if self.package else None

    @property
    def total_value(self) -> float | None:
        value = self.parsed.zkb.total_value if self.parsed else None
        return None if value is None else float(value)


def parse_message(message: Message) -> _Work:
    """The message as the poller wrote it, validated. Any flaw in it is the record's
    `PermanentError`, with its package when it was one (so the DLQ entry names its killmail)."""
    work = _Work(message)
    try:
        work.package = Package.from_body(message.body)
        zkb = parse_zkb(work.package.zkb)
        killmail = None if work.package.esi is None else parse_killmail(work.package.esi)
    except InvalidPackage as exc:
        work.error = PermanentError("invalid_message", exc.reason)
        return work
    except KillmailValidationError as exc:
        work.error = PermanentError("validation_error", str(exc))
        return work
    except Exception as exc:
        # A flaw in the validator, not in the message: the record waits for a fix, the batch goes on.
        logger.exception("unexpected error reading a message", extra={"message_id": message.message_id})
        work.error = _unexpected(exc)
        return work
    if killmail is not None and killmail.killmail_id != work.package.killmail_id:
        work.error = PermanentError("esi_mismatch",
                                    f"message is for killmail {work.package.killmail_id}, its esi is {killmail.killmail_id}")
        return work
    work.parsed = ParsedMessage(work.package, zkb, killmail)
    work.killmail = killmail
    return work


def _unexpected(exc: Exception) -> TransientError:
    return TransientError("unexpected_error", f"{type(exc).__name__}: {exc}".strip()[:ERROR_MESSAGE_CHARS])


class DeadLetterQueue:
    """Sends permanent failures to the DLQ: the original body, with message attributes
    `error_type`, `error_message`, and `source` / `killmail_id` when known."""

    def __init__(self, queue_url: str, client=None):
        self.queue_url = queue_url
        self._client = client

    @property
    def client(self):
        if self._client is None:
            self._client = boto3.client("sqs", config=Config(connect_timeout=3, read_timeout=5,
                                                             retries={"mode": "standard", "max_attempts": 3}))
        return self._client

    def send(self, letters: Sequence[tuple[_Work, FetchError]]) -> set[str]:
        """Returns the message ids the DLQ did not accept."""
        failed: set[str] = set()
        for chunk in _chunks([(work.message.message_id, _entry(work, error)) for work, error in letters]):
            entries = [dict(entry, Id=str(n)) for n, (_, entry) in enumerate(chunk)]
            try:
                answer = self.client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except (BotoCoreError, ClientError) as exc:
                logger.error("DLQ send failed", extra={"error": str(exc), "messages": len(chunk)})
                failed.update(message_id for message_id, _ in chunk)
                continue
            for refused in answer.get("Failed", []):
                message_id = chunk[int(refused["Id"])][0]
                logger.error("DLQ refused a message", extra={"message_id": message_id,
                                                             "error": refused.get("Message", refused.get("Code"))})
                failed.add(message_id)
        return failed


def _entry(work: _Work, error: FetchError) -> dict:
    attributes = {
        "error_type": {"DataType": "String", "StringValue": error.error_type},
        "error_message": {"DataType": "String", "StringValue": (error.message or error.error_type)[:ERROR_MESSAGE_CHARS]},
    }
    if work.package is not None:
        attributes["source"] = {"DataType": "String", "StringValue": work.package.source}
        attributes["killmail_id"] = {"DataType": "Number", "StringValue": str(work.killmail_id)}
    return {"MessageBody": work.message.body, "MessageAttributes": attributes}


def _chunks(entries: list[tuple[str, dict]]) -> Iterable[list[tuple[str, dict]]]:
    """(message id, entry) pairs in SendMessageBatch calls: the id names what each entry carries."""
    return sqs_limits.batches(entries, entry=lambda item: item[1])


def write_records(database: Database, records: Sequence[KillmailRecord]) -> list[Outcome | PermanentError]:
    """All records in one transaction. Should PostgreSQL refuse a value in one of them, that one
    record would fail its whole batch at every delivery: the batch is then written record by
    record, and each record refused is a permanent failure of its own."""
    try:
        return list(database.run(lambda conn: KillmailStore(conn).write(records)))
    except psycopg2.DataError:
        logger.warning("the database refused a value in the batch; writing its records one by one")
    results: list[Outcome | PermanentError] = []
    for record in records:
        try:
            results.extend(database.run(lambda conn: KillmailStore(conn).write([record])))
        except psycopg2.DataError as exc:
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])
            results.append(PermanentError("database_rejected", " ".join(line.strip() for line in detail)))
    return results


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Fetcher:
    """`process(messages, time_left)` → {message_id: RecordResult}. Keeps its ESI client,
    database connection and DLQ client for the next batch."""

    def __init__(self, *, esi: EsiClient, database: Database, dead_letters: DeadLetterQueue,
                 parallelism: int = 4, write_reserve: float = WRITE_RESERVE_SECONDS,
                 clock: Callable[[], float] = time.monotonic, now: Callable[[], datetime] = _utc_now):
        self.esi = esi
        self.database = database
        self.dead_letters = dead_letters
        self.parallelism = parallelism
        self.write_reserve = write_reserve
        self._clock = clock
        self._now = now

    @classmethod
    def from_config(cls, config: FetcherConfig) -> "Fetcher":
        return cls(esi=EsiClient(config.esi_url, config.user_agent), database=Database(config.database),
                   dead_letters=DeadLetterQueue(config.dlq_url), parallelism=config.esi_parallelism)

    def process(self, messages: Sequence[Message], time_left: float) -> dict[str, RecordResult]:
        """`time_left`: seconds until the invocation must have answered."""
        deadline = self._clock() + max(0.0, time_left - self.write_reserve)
        batch = [parse_message(message) for message in messages]
        pending = [work for work in batch if work.error is None]
        write_ms = None
        try:
            self._find_killmails(pending, deadline)
            write_ms = self._write([work for work in pending if work.error is None and work.killmail is not None])
        except DatabaseUnavailable as exc:
            self._give_back(pending, TransientError("database_unavailable", str(exc)))
        except psycopg2.Error as exc:
            logger.exception("database error")
            self._give_back(pending, TransientError("database_error", f"{type(exc).__name__}: {exc}".strip()))
        except Exception as exc:
            # e.g. a database secret whose contents are no use (ConfigError). Raising would fail
            # the invocation: every record retried, the permanent failures too, and the reason
            # in no record's log line.
            logger.exception("unexpected error in the batch")
            self._give_back(pending, _unexpected(exc))
        results = self._settle(batch)
        self._report(batch, results, write_ms)
        return results

    @staticmethod
    def _give_back(pending: list[_Work], error: TransientError) -> None:
        for work in pending:
            if work.error is None and work.outcome is None:
                work.error = error

    def _find_killmails(self, pending: list[_Work], deadline: float) -> None:
        """Give every message its killmail: from its own body, from another message of the
        batch, from the database (stored already: only its zkb may change), or from ESI."""
        carried = {work.killmail_id: work.killmail for work in pending if work.killmail is not None}
        missing = [work for work in pending if work.killmail is None and work.killmail_id not in carried]
        if not missing:
            self._share(pending, carried)
            return
        ids = {work.killmail_id for work in missing}
        # one query: which are stored already (those never reach ESI), with their documents
        unusable: dict[int, TransientError] = {}
        for killmail_id, document in self.database.run(lambda conn: KillmailStore(conn).stored_documents(ids)).items():
            try:
                carried[killmail_id] = parse_killmail(document)
            except KillmailValidationError as exc:
                # Stored before the validator grew stricter. ESI would serve the same document,
                # so fetching it is no cure: the record goes back with its reason logged, until
                # a fix or SQS's maxReceiveCount.
                unusable[killmail_id] = TransientError(
                    "stored_document_invalid", f"the stored ESI document no longer validates: {exc}")
            except Exception as exc:
                logger.exception("unexpected error reading a stored document", extra={"killmail_id": killmail_id})
                unusable[killmail_id] = _unexpected(exc)
        for work in missing:
            if work.killmail_id in unusable:
                work.error = unusable[work.killmail_id]
        self._share(pending, carried)
        self._fetch([work for work in pending if work.killmail is None and work.error is None], deadline)

    @staticmethod
    def _share(pending: list[_Work], carried: dict[int, Killmail]) -> None:
        for work in pending:
            if work.killmail is None and work.killmail_id in carried:
                work.killmail = carried[work.killmail_id]

    def _fetch(self, to_fetch: list[_Work], deadline: float) -> None:
        wanted: dict[tuple[int, str], list[_Work]] = {}
        for work in to_fetch:
            wanted.setdefault((work.killmail_id, work.parsed.package.hash), []).append(work)
        if not wanted:
            return

        def fetch(key: tuple[int, str]) -> Killmail | FetchError:
            first = wanted[key][0]
            logger.info(f"fetching {key[0]} from ESI", extra={"killmail_id": key[0], "outcome": "fetching",
                                                              "total_value": first.total_value})
            try:
                return self.esi.fetch(key[0], key[1], deadline)
            except FetchError as exc:
                return exc
            except Exception as exc:
                # Out of a thread it would surface in pool.map and fail the whole batch.
                logger.exception(f"unexpected error fetching {key[0]} from ESI", extra={"killmail_id": key[0]})
                return _unexpected(exc)

        with ThreadPoolExecutor(max_workers=min(self.parallelism, len(wanted)), thread_name_prefix="esi") as pool:
            for key, result in zip(wanted, pool.map(fetch, wanted)):
                for work in wanted[key]:
                    if isinstance(result, FetchError):
                        work.error = result
                    else:
                        work.killmail = result

    def _write(self, ready: list[_Work]) -> float | None:
        """One transaction for the whole batch; returns how long it took (ms)."""
        if not ready:
            return None
        records = [
            KillmailRecord(killmail=work.killmail, killmail_hash=work.parsed.package.hash, zkb=work.parsed.zkb,
                           source=work.parsed.package.source, sequence_id=work.parsed.package.sequence_id,
                           received_at=work.message.sent_at or self._now())
            for work in ready
        ]
        started = self._clock()
        results = write_records(self.database, records)
        write_ms = (self._clock() - started) * 1000
        for work, result in zip(ready, results):
            if isinstance(result, Outcome):
                work.outcome = result
            else:
                work.error = result
        return write_ms

    def _settle(self, batch: list[_Work]) -> dict[str, RecordResult]:
        """Dead-letter the permanent failures; the result of every message."""
        permanent = [(work, work.error) for work in batch if isinstance(work.error, PermanentError)]
        refused = self.dead_letters.send(permanent) if permanent else set()
        results = {}
        for work in batch:
            message_id = work.message.message_id
            if work.outcome is not None:
                results[message_id] = RecordResult(_DISPOSITION[work.outcome], work.killmail_id)
            elif isinstance(work.error, PermanentError) and message_id not in refused:
                results[message_id] = RecordResult(Disposition.DEAD_LETTERED, work.killmail_id, work.error)
            else:
                error = work.error
                if message_id in refused:
                    error = TransientError("dlq_unavailable", f"could not dead-letter ({error.error_type}: {error.message})")
                results[message_id] = RecordResult(Disposition.RETRY, work.killmail_id, error)
        return results

    def _report(self, batch: list[_Work], results: dict[str, RecordResult], write_ms: float | None) -> None:
        stored_at = self._now()
        for work in batch:
            result = results[work.message.message_id]
            keys = {"killmail_id": result.killmail_id, "total_value": work.total_value}
            if result.error is None:
                logger.info(f"{result.disposition.value} {result.killmail_id}",
                            extra={**keys, "outcome": result.disposition.value})
            else:
                logger.warning(f"failed {result.killmail_id or 'message'}: {result.error.message}",
                               extra={**keys, "outcome": "failed", "reason": result.error.message,
                                      "error_type": result.error.error_type, "retry": result.retry,
                                      "message_id": work.message.message_id})
            if result.disposition is Disposition.SAVED:
                lag = (stored_at - work.killmail.killmail_time).total_seconds()
                metrics.add_metric(name="IngestLagSeconds", unit=MetricUnit.Seconds, value=max(0.0, lag))
        dispositions = [result.disposition for result in results.values()]
        esi = self.esi.take_counts()
        for name, value in (
            ("KillmailsStored", dispositions.count(Disposition.SAVED)),
            ("KillmailsDuplicate", dispositions.count(Disposition.SKIPPED)),
            ("ZkbUpdated", dispositions.count(Disposition.UPDATED)),
            ("EsiFetches", esi["requests"]),
            ("EsiErrors", esi["errors"]),
            ("EsiRateLimited", esi["rate_limited"]),
            ("PermanentFailures", dispositions.count(Disposition.DEAD_LETTERED)),
            ("TransientFailures", dispositions.count(Disposition.RETRY)),
        ):
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
        if write_ms is not None:
            metrics.add_metric(name="DbWriteMs", unit=MetricUnit.Milliseconds, value=write_ms)
