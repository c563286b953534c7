"""The fetcher's core: one SQS batch of packages in, their killmails stored, one result per message.

A batch costs few round trips whatever its size. Every body is read first (the contract only;
a bad one fails alone); one query (`KillmailStore.stored_keys`) then tells which killmails are
stored and the publication key they were stored with, so a re-delivery whose publication is no
newer is settled as a duplicate there, its documents never parsed nor validated. The rest are
validated; one more query finds which of the killmails that came without their ESI document
are stored already (their newer zkb needs the stored document) — those never reach ESI; the
rest are fetched from ESI a few at a time; then every killmail is written in one transaction.
A batch of OVERLAP_MIN messages or more to validate is written in two: the first half's inline
killmails while the second half is validated, then the rest (so a batch of 100 costs BEGIN,
COPY, MERGE, COPY attackers, COPY items, COMMIT twice, plus the stored-keys query).
After the writes commit, the batch's killmails whose events are still unpublished (those it
stored, and the duplicates: an earlier delivery may have stored one and failed to publish it)
go to the event bus (events/publisher.py), when one is configured. Permanent failures are
dead-lettered with their reason; transient ones are handed back for SQS to redeliver."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from killstream.config import FetcherConfig
from killstream.errors import DatabaseUnavailable, FetchError, KillmailValidationError, PermanentError, TransientError
from killstream.fetcher.dead_letters import DeadLetter, DeadLetterQueue
from killstream.fetcher.messages import (
    DISPOSITION_OF,
    Disposition,
    Duplicate,
    Failed,
    Found,
    Item,
    Message,
    MessageResult,
    Read,
    Stored,
    Unreadable,
    Wanted,
    Work,
    read_message,
    unexpected_error,
    validate_message,
)
from killstream.fetcher.report import report_batch
from killstream.killmail import Killmail, parse_killmail
from killstream.observability import logger
from killstream.storage.writer import KillmailRecord, KillmailStore, Outcome, StoredKey

if TYPE_CHECKING:
    import psycopg2
    from psycopg2.extensions import connection

    from killstream.esi.killmails import KillmailClient
    from killstream.events.publisher import EventPublisher
    from killstream.storage.connection import Database

NO_ESI_COUNTS = {"requests": 0, "errors": 0, "rate_limited": 0}

# A batch with at least this many messages to validate writes its first half while it validates
# the second (Fetcher._validate_and_write).
OVERLAP_MIN = 40

# Left for the database write and the DLQ when the ESI fetches run against the clock.
WRITE_RESERVE_SECONDS = 5.0


def write_records(database: Database, records: Sequence[KillmailRecord]) -> list[Outcome | PermanentError]:
    """All records in one transaction. Should it fail because of what a record holds (a value
    PostgreSQL refuses, text that does not encode) rather than a lost connection, that record
    would fail its whole batch at every delivery: the batch is then split in halves, each
    written on its own, until the bad record stands alone as a permanent failure of its own.
    Anything else (a lost connection, a statement timeout) fails the batch as before."""
    import psycopg2  # imported by the database connection already: psycopg2 waits for the first batch

    try:
        return list(database.run(_writing(records)))
    except psycopg2.Error as exc:
        if not record_refused(exc):
            raise
        if len(records) == 1:
            detail = str(exc).strip().splitlines() or [type(exc).__name__]
            return [PermanentError("database_rejected", " ".join(line.strip() for line in detail))]
        logger.warning(
            "the database refused something in the batch: writing it in halves",
            extra={"records": len(records), "error": _first_line(exc)},
        )
    half = len(records) // 2
    return write_records(database, records[:half]) + write_records(database, records[half:])


def record_refused(exc: psycopg2.Error) -> bool:
    """A failure caused by what a record holds: SQLSTATE class 22 (data exception) or 23
    (integrity), or a COPY psycopg2 aborted because a row's text would not encode (it reports
    that as QueryCanceled, "COPY from stdin failed: error in .read() call: UnicodeEncodeError")."""
    import psycopg2.errors

    if isinstance(exc, psycopg2.DataError | psycopg2.IntegrityError):
        return True
    return isinstance(exc, psycopg2.errors.QueryCanceled) and "COPY from stdin failed" in str(exc)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _writing(records: Sequence[KillmailRecord]) -> Callable[[connection], list[Outcome]]:
    """The write of `records` as one transaction Database.run may repeat on a new connection."""
    return lambda conn: KillmailStore(conn).write(records)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _published(uploaded_at: int | None) -> datetime | None:
    """R2Z2's uploaded_at (Unix seconds) as the time it is stored as."""
    return None if uploaded_at is None else datetime.fromtimestamp(uploaded_at, UTC)


class Fetcher:
    """`process(messages, time_left)` → {message_id: MessageResult}. Keeps its ESI client,
    database connection and DLQ client for the next batch."""

    def __init__(
        self,
        *,
        esi: KillmailClient | Callable[[], KillmailClient],
        database: Database,
        dead_letters: DeadLetterQueue,
        events: EventPublisher | None = None,
        parallelism: int = 4,
        write_reserve: float = WRITE_RESERVE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utc_now,
    ):
        self._esi = esi
        self.database = database
        self.dead_letters = dead_letters
        self.events = events
        """Publishes the stored killmails' events; None: no event bus, nothing published."""
        self.parallelism = parallelism
        self.write_reserve = write_reserve
        self._clock = clock
        self._now = now

    @classmethod
    def from_config(cls, config: FetcherConfig) -> Fetcher:
        from killstream.storage.connection import Database  # psycopg2 with it: at the first batch, not at import

        database = Database(config.database)
        return cls(
            esi=lambda: _killmail_client(config),
            database=database,
            dead_letters=DeadLetterQueue(config.dlq_url),
            events=_event_publisher(config.event_bus_name, database) if config.event_bus_name else None,
            parallelism=config.esi_parallelism,
        )

    @property
    def esi(self) -> KillmailClient:
        """The ESI client, made when a batch first needs ESI: most batches carry every killmail
        inline, and the cold start does not pay for importing requests."""
        if callable(self._esi):
            self._esi = self._esi()
        return self._esi

    def _esi_counts(self) -> dict[str, int]:
        return dict(NO_ESI_COUNTS) if callable(self._esi) else self._esi.take_counts()

    def process(self, messages: Sequence[Message], time_left: float) -> dict[str, MessageResult]:
        """`time_left`: seconds until the invocation must have answered."""
        deadline = self._clock() + max(0.0, time_left - self.write_reserve)
        reads = [read_message(message) for message in messages]
        write_ms = None
        lookup_failed = None
        try:
            stored = self._stored_keys([read for read in reads if isinstance(read, Read)])
        except Exception as exc:
            # Nothing can be settled as a duplicate: every readable message is validated all the
            # same (a permanent fault is dead-lettered whatever the database does), then handed back.
            stored, lookup_failed = {}, _batch_error(exc)
        if lookup_failed is not None:
            batch = [self._duplicate_or_validated(read, stored) for read in reads]
            self._give_back([work for work in batch if isinstance(work, Item)], lookup_failed)
        else:
            batch, write_ms = self._validate_and_write(reads, stored, deadline)
        if self.events is not None:
            batch = self._publish(batch, time_left=deadline + self.write_reserve - self._clock())
        results = self._settle(batch)
        report_batch(batch, results, self._esi_counts(), write_ms, self._now())
        return results

    def _validate_and_write(
        self, reads: list[Read | Unreadable], stored: dict[int, StoredKey], deadline: float
    ) -> tuple[list[Work], float | None]:
        """Validate the messages not settled as duplicates and write what they carry. A batch of
        at least OVERLAP_MIN messages to validate is taken in two halves: the first half's inline
        killmails are written (a transaction of their own, in a thread) while the second half is
        validated, since the client is idle while the database works; then the rest (the second
        half, and what came from the database or ESI) is written in a second transaction."""
        half = len(reads) // 2 if sum(isinstance(read, Read) for read in reads) >= OVERLAP_MIN else 0
        first = [self._duplicate_or_validated(read, stored) for read in reads[:half]]
        early = [work for work in first if isinstance(work, Item) and isinstance(work.stage, Found)]
        write_ms: float | None = None
        failed: TransientError | None = None
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="write") as writer:
            writing = writer.submit(self._write, early) if early else None
            batch = first + [self._duplicate_or_validated(read, stored) for read in reads[half:]]
            if writing is not None:
                try:
                    write_ms = writing.result()
                except Exception as exc:
                    failed = _batch_error(exc)
        items = [work for work in batch if isinstance(work, Item)]
        if failed is not None:  # the database failed the first half: the rest is not tried
            self._give_back(items, failed)
            return batch, write_ms
        try:
            self._find_killmails(items, deadline)
            rest_ms = self._write([item for item in items if isinstance(item.stage, Found)])
        except Exception as exc:
            self._give_back(items, _batch_error(exc))
            return batch, write_ms
        if rest_ms is not None:
            write_ms = rest_ms if write_ms is None else write_ms + rest_ms
        return batch, write_ms

    def _stored_keys(self, reads: list[Read]) -> dict[int, StoredKey]:
        """One query: the publication key of each of these killmails that is stored."""
        if not reads:
            return {}
        ids = {read.killmail_id for read in reads}
        return self.database.run(lambda conn: KillmailStore(conn).stored_keys(ids))

    @staticmethod
    def _duplicate_or_validated(read: Read | Unreadable, stored: dict[int, StoredKey]) -> Work:
        if isinstance(read, Unreadable):
            return read
        key = stored.get(read.killmail_id)
        if key is not None and key.settles(_published(read.package.uploaded_at), read.package.sequence_id):
            return Duplicate(read.message, read.package)
        return validate_message(read)

    @staticmethod
    def _give_back(items: list[Item], error: TransientError) -> None:
        for item in items:
            if isinstance(item.stage, Wanted | Found):
                item.stage = Failed(error)

    def _find_killmails(self, items: list[Item], deadline: float) -> None:
        """Give every message its killmail: from its own body, from another message of the
        batch, from the database (stored already: only its zkb may change), or from ESI."""
        carried = {item.killmail_id: item.stage.killmail for item in items if isinstance(item.stage, Found | Stored)}
        missing = [item for item in items if isinstance(item.stage, Wanted) and item.killmail_id not in carried]
        if missing:
            carried |= self._stored_killmails(missing)
        for item in items:
            if isinstance(item.stage, Wanted) and item.killmail_id in carried:
                item.stage = Found(carried[item.killmail_id])
        self._fetch([item for item in items if isinstance(item.stage, Wanted)], deadline)

    def _stored_killmails(self, missing: list[Item]) -> dict[int, Killmail]:
        """One query: which are stored already (those never reach ESI), with their documents.
        A stored document that no longer validates fails its messages here."""
        ids = {item.killmail_id for item in missing}
        found: dict[int, Killmail] = {}
        unusable: dict[int, TransientError] = {}
        stored = self.database.run(lambda conn: KillmailStore(conn).stored_documents(ids))
        for killmail_id, document in stored.items():
            try:
                found[killmail_id] = parse_killmail(document)
            except KillmailValidationError as exc:
                # Stored before the validator grew stricter. ESI would serve the same document,
                # so fetching it is no cure: the message goes back with its reason logged, until
                # a fix or SQS's maxReceiveCount.
                unusable[killmail_id] = TransientError(
                    "stored_document_invalid", f"the stored ESI document no longer validates: {exc}"
                )
            except Exception as exc:
                logger.exception("unexpected error reading a stored document", extra={"killmail_id": killmail_id})
                unusable[killmail_id] = unexpected_error(exc)
        for item in missing:
            if item.killmail_id in unusable:
                item.stage = Failed(unusable[item.killmail_id])
        return found

    def _fetch(self, wanted_items: list[Item], deadline: float) -> None:
        wanted: dict[tuple[int, str], list[Item]] = {}
        # The most often delivered first: what does not fit in this invocation is handed back
        # (out_of_time), and a message handed back so goes ahead of newer ones next time rather
        # than reaching SQS's maxReceiveCount behind them.
        for item in sorted(wanted_items, key=lambda item: -item.message.receive_count):
            wanted.setdefault((item.killmail_id, item.package.hash), []).append(item)
        if not wanted:
            return
        esi = self.esi  # made here, once, not by the first of the threads below to ask

        def fetch(key: tuple[int, str]) -> Killmail | FetchError:
            killmail_id, killmail_hash = key
            logger.info(
                f"fetching {killmail_id} from ESI",
                extra={"killmail_id": killmail_id, "outcome": "fetching", "total_value": wanted[key][0].total_value},
            )
            try:
                return esi.fetch(killmail_id, killmail_hash, deadline)
            except FetchError as exc:
                return exc
            except Exception as exc:
                # Out of a thread it would surface in pool.map and fail the whole batch.
                logger.exception(
                    f"unexpected error fetching {killmail_id} from ESI", extra={"killmail_id": killmail_id}
                )
                return unexpected_error(exc)

        with ThreadPoolExecutor(max_workers=min(self.parallelism, len(wanted)), thread_name_prefix="esi") as pool:
            for key, result in zip(wanted, pool.map(fetch, wanted), strict=True):
                for item in wanted[key]:
                    item.stage = Failed(result) if isinstance(result, FetchError) else Found(result)

    def _write(self, ready: list[Item]) -> float | None:
        """One transaction for the whole batch; returns how long it took (ms)."""
        if not ready:
            return None
        killmails = [item.stage.killmail for item in ready if isinstance(item.stage, Found)]
        records = [
            KillmailRecord(
                killmail=killmail,
                killmail_hash=item.package.hash,
                zkb=item.parsed.zkb,
                source=item.package.source,
                sequence_id=item.package.sequence_id,
                received_at=item.message.sent_at or self._now(),
                uploaded_at=_published(item.package.uploaded_at),
                publish=self.events is not None,
            )
            for item, killmail in zip(ready, killmails, strict=True)
        ]
        started = self._clock()
        results = write_records(self.database, records)
        write_ms = (self._clock() - started) * 1000
        for item, killmail, result in zip(ready, killmails, results, strict=True):
            item.stage = Stored(killmail, result) if isinstance(result, Outcome) else Failed(result)
        return write_ms

    def _publish(self, batch: list[Work], time_left: float) -> list[Work]:
        """The events of the batch's stored killmails that are still unpublished: this batch's
        new and updated ones, and those an earlier delivery stored but could not publish (a
        re-delivery settled as a duplicate before parsing included: the publisher reads which
        are unpublished). A message whose killmail's event did not go is given back (its
        redelivery writes nothing)."""
        assert self.events is not None
        stored = [work for work in batch if isinstance(work, Item) and isinstance(work.stage, Stored)]
        duplicates = [work for work in batch if isinstance(work, Duplicate)]
        ids = {item.killmail_id for item in stored} | {work.killmail_id for work in duplicates}
        publication = self.events.publish(ids, time_left)
        if not publication.failed:
            return batch
        for item in stored:
            if item.killmail_id in publication.failed:
                item.stage = Failed(TransientError("events_unpublished", publication.failed[item.killmail_id]))
        return [
            replace(work, unpublished=publication.failed[work.killmail_id])
            if isinstance(work, Duplicate) and work.killmail_id in publication.failed
            else work
            for work in batch
        ]

    def _settle(self, batch: list[Work]) -> dict[str, MessageResult]:
        """Dead-letter the permanent failures; the result of every message."""
        letters = [
            DeadLetter(work.message, error, work.package)
            for work in batch
            if isinstance(error := _error_of(work), PermanentError)
        ]
        refused = self.dead_letters.send(letters) if letters else set()
        self._remember([letter for letter in letters if letter.message.message_id not in refused])
        results = {}
        for work in batch:
            message_id = work.message.message_id
            if isinstance(work, Item) and isinstance(work.stage, Stored):
                results[message_id] = MessageResult(DISPOSITION_OF[work.stage.outcome], work.killmail_id)
                continue
            if isinstance(work, Duplicate) and work.unpublished is None:
                results[message_id] = MessageResult(DISPOSITION_OF[Outcome.DUPLICATE], work.killmail_id)
                continue
            error = _error_of(work)
            if isinstance(error, PermanentError) and message_id not in refused:
                results[message_id] = MessageResult(Disposition.DEAD_LETTERED, work.killmail_id, error)
                continue
            if message_id in refused:
                error = TransientError(
                    "dlq_unavailable", f"could not dead-letter ({error.error_type}: {error.message})"
                )
            results[message_id] = MessageResult(Disposition.RETRY, work.killmail_id, error)
        return results

    def _remember(self, letters: list[DeadLetter]) -> None:
        """The dead-lettered killmails in `killmail_failures`, so the reconciler can say why they
        are missing without asking ESI again. Best-effort: the DLQ holds them either way."""
        from killstream.storage.failures import KillmailFailure, remember_failures  # psycopg2's, only when needed

        failures = [
            KillmailFailure(
                letter.package.killmail_id,
                letter.package.hash,
                letter.package.source,
                letter.error.error_type,
                letter.error.message,
            )
            for letter in letters
            if letter.package is not None
        ]
        remember_failures(self.database, failures)


def _batch_error(exc: Exception) -> TransientError:
    """What the messages of a batch that failed as a whole are handed back with."""
    if isinstance(exc, DatabaseUnavailable):
        return TransientError("database_unavailable", str(exc))
    import psycopg2

    if isinstance(exc, psycopg2.Error):
        logger.exception("database error")
        return TransientError("database_error", f"{type(exc).__name__}: {exc}".strip())
    # e.g. a database secret whose contents are no use (ConfigError). Raising would fail the
    # invocation: every message retried, the permanent failures too, and the reason in no
    # message's log line.
    logger.exception("unexpected error in the batch")
    return unexpected_error(exc)


def _event_publisher(bus_name: str, database: Database) -> EventPublisher:
    from killstream.events.bus import EventBus  # boto3 with it: only with an event bus
    from killstream.events.publisher import EventPublisher

    return EventPublisher(EventBus(bus_name), database)


def _killmail_client(config: FetcherConfig) -> KillmailClient:
    from killstream.esi.killmails import KillmailClient

    return KillmailClient(config.esi_url, config.user_agent, compatibility_date=config.esi_compatibility_date)


def _error_of(work: Work) -> FetchError:
    """Why a message that is not stored was not (a stage left unfinished is a bug, retried)."""
    if isinstance(work, Unreadable):
        return work.error
    if isinstance(work, Duplicate):
        if work.unpublished is not None:
            return TransientError("events_unpublished", work.unpublished)
        return TransientError("unexpected_error", "the batch ended with the message settled as a duplicate")
    if isinstance(work.stage, Failed):
        return work.stage.error
    return TransientError("unexpected_error", f"the batch ended with the message {type(work.stage).__name__.lower()}")
