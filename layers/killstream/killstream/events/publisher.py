"""The fetcher's publication of killmail events, after each batch's write has committed, never
before (docs/events.md).

At least once, without writing a killmail twice: the killmails of the batch whose events are
still unpublished (never published, or updated since; the published mark of sql/005_events.sql)
are read back with their names, their events put on the bus, and only the events the bus took
are marked published. An event the bus did not take leaves its killmail unpublished and its
messages are given back to SQS: the redelivery finds the killmail stored, writes nothing, and
publishes what is still unpublished. A mark that cannot be written after the bus took the event
gives the messages back too: the event goes again (consumers de-duplicate on the killmail id and
zkb_version)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import psycopg2

from killstream.errors import DatabaseUnavailable
from killstream.events.bus import EventBus
from killstream.events.detail import STORED, KillmailEvent, killmail_event
from killstream.observability import Metric, MetricUnit, logger, metrics
from killstream.storage.connection import Database
from killstream.storage.publication import PublicationStore

# Below this much of the invocation left, nothing is put on the bus: the messages come back.
MIN_SECONDS = 3.0


@dataclass
class Publication:
    """What one publication did: events the bus took, and the killmails whose events did not go
    (or were not marked), with why."""

    published: list[KillmailEvent] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)


class EventPublisher:
    def __init__(self, bus: EventBus, database: Database, *, min_seconds: float = MIN_SECONDS):
        self.bus = bus
        self.database = database
        self.min_seconds = min_seconds

    def publish(self, killmail_ids: Iterable[int], time_left: float) -> Publication:
        """Publish what is unpublished of these (stored) killmails; never raises."""
        ids = sorted(set(killmail_ids))
        publication = Publication()
        if not ids:
            return publication
        if time_left < self.min_seconds:
            return self._failed(publication, ids, "out_of_time: no time left in this invocation to publish")
        try:
            rows = self.database.run(lambda conn: PublicationStore(conn).unpublished(ids))
        except (DatabaseUnavailable, psycopg2.Error) as exc:
            return self._failed(publication, ids, f"could not read the killmails' events: {_first_line(exc)}")
        events = []
        for row in rows:
            try:
                events.append(killmail_event(row))
            except Exception as exc:  # a flaw in the builder: this killmail waits for a fix, the rest go
                logger.exception("cannot build a killmail's event", extra={"killmail_id": row.get("killmail_id")})
                publication.failed[int(row["killmail_id"])] = f"cannot build its event: {type(exc).__name__}: {exc}"
        taken = []
        for event, refusal in zip(events, self.bus.put(events) if events else [], strict=True):
            if refusal is None:
                taken.append(event)
            else:
                publication.failed[event.killmail_id] = refusal
        if taken:
            versions = {event.killmail_id: event.zkb_version for event in taken}
            try:
                self.database.run(lambda conn: PublicationStore(conn).mark_published(versions))
            except (DatabaseUnavailable, psycopg2.Error) as exc:
                # On the bus, but not marked: they will go again with the redelivery.
                for event in taken:
                    publication.failed[event.killmail_id] = f"published, but not marked: {_first_line(exc)}"
            publication.published = taken
        self._report(publication)
        return publication

    def _failed(self, publication: Publication, ids: list[int], reason: str) -> Publication:
        publication.failed = dict.fromkeys(ids, reason)
        self._report(publication)
        return publication

    @staticmethod
    def _report(publication: Publication) -> None:
        stored = sum(event.detail_type == STORED for event in publication.published)
        metrics.add_metric(name=Metric.EVENTS_PUBLISHED, unit=MetricUnit.Count, value=len(publication.published))
        metrics.add_metric(name=Metric.EVENT_PUBLISH_FAILURES, unit=MetricUnit.Count, value=len(publication.failed))
        if publication.published:
            logger.info(
                f"published {len(publication.published)} killmail events",
                extra={
                    "events": len(publication.published),
                    "stored": stored,
                    "updated": len(publication.published) - stored,
                },
            )
        for killmail_id, reason in publication.failed.items():
            logger.warning(
                f"event of {killmail_id} not published: {reason}",
                extra={"killmail_id": killmail_id, "reason": reason, "error_type": "events_unpublished"},
            )


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
