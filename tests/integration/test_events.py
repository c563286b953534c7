"""Killmail events end to end through moto's EventBridge and a real PostgreSQL: the fetcher puts
one `Killmail Stored` event per newly stored killmail and one `Killmail Updated` per zkb update
on the bus, after the write has committed; nothing for a redelivery; and a publish that fails
after the commit is published by the message's redelivery without writing the killmail again.
What reaches the bus is read where a user's rule would see it: a catch-all rule's SQS target."""

from __future__ import annotations

import json
import uuid
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from killstream.errors import DatabaseUnavailable
from killstream.esi.killmails import KillmailClient
from killstream.events.bus import EventBus
from killstream.events.detail import SOURCE, STORED, UPDATED
from killstream.events.publisher import EventPublisher
from killstream.fetcher.batch import Fetcher
from killstream.fetcher.dead_letters import DeadLetterQueue
from killstream.fetcher.messages import Disposition, Message
from killstream.killmail import parse_killmail, parse_zkb
from killstream.observability import metrics
from killstream.package import Package
from killstream.storage.connection import Database, connect
from killstream.storage.publication import PublicationStore
from killstream.storage.writer import KillmailRecord, KillmailStore
from killstream_workstation.corpus import split_hash, zkb_for
from killstream_workstation.local.lambda_runtime import LambdaContext, load_handler_module, sqs_record
from killstream_workstation.stats import database_report
from tests.support.fakes import RecordingEvents
from tests.support.sqs import drain

UA = "killstream-tests/0.1 (tests@example.com)"


@pytest.fixture
def bus(aws) -> tuple[str, str]:
    """A killmail bus with a catch-all rule whose SQS target shows what the bus took."""
    name = f"killstream-test-{uuid.uuid4().hex[:8]}"
    events, sqs = boto3.client("events"), boto3.client("sqs")
    events.create_event_bus(Name=name)
    queue_url = sqs.create_queue(QueueName=f"{name}-seen")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="everything", EventBusName=name, EventPattern=json.dumps({"source": [SOURCE]}))
    events.put_targets(Rule="everything", EventBusName=name, Targets=[{"Id": "seen", "Arn": queue_arn}])
    return name, queue_url


def seen(queue_url: str) -> list[dict]:
    return [body for body, _ in drain(queue_url)]


def body(doc: dict, *, sequence_id: int = 1, total: float | None = None) -> str:
    esi, killmail_hash = split_hash(doc)
    zkb = zkb_for(doc) | ({"totalValue": total} if total is not None else {})
    return Package(doc["killmail_id"], killmail_hash, zkb, "r2z2", esi=esi, sequence_id=sequence_id).to_body()


def marks(url: str, ids) -> dict[int, tuple[int, int | None]]:
    with closing(connect(url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT killmail_id, zkb_version, published_version FROM killmails WHERE killmail_id = ANY(%s)",
            (list(ids),),
        )
        return {row[0]: (row[1], row[2]) for row in cur.fetchall()}


def record_of(doc: dict, *, publish: bool, sequence_id: int = 1, total: float | None = None) -> KillmailRecord:
    esi, killmail_hash = split_hash(doc)
    zkb = zkb_for(doc) | ({"totalValue": total} if total is not None else {})
    return KillmailRecord(parse_killmail(esi), killmail_hash, parse_zkb(zkb), "r2z2", sequence_id, publish=publish)


def test_the_writer_versions_zkb_updates_and_only_live_writes_wait_for_publication(conn, sample_killmails):
    history, live = sample_killmails[:2]
    store, publication = KillmailStore(conn), PublicationStore(conn)
    store.write([record_of(history, publish=False), record_of(live, publish=True)])
    ids = [history["killmail_id"], live["killmail_id"]]
    assert [row["killmail_id"] for row in publication.unpublished(ids)] == [live["killmail_id"]]
    # newer zKillboard values: a version more, and an update to publish, history's too
    store.write([record_of(doc, publish=False, sequence_id=2, total=5e9) for doc in (history, live)])
    rows = {row["killmail_id"]: row for row in publication.unpublished(ids)}
    assert {k: (r["zkb_version"], r["published_version"]) for k, r in rows.items()} == {
        history["killmail_id"]: (1, 0),
        live["killmail_id"]: (1, None),
    }
    assert float(rows[live["killmail_id"]]["zkb_total_value"]) == 5e9  # the row's values, the latest
    assert publication.backlog()[0] == 2
    assert "Events waiting for the bus: 2 (oldest stored " in database_report(conn)
    assert publication.mark_published({history["killmail_id"]: 1, live["killmail_id"]: 1}) == 2
    assert publication.mark_published({live["killmail_id"]: 0}) == 0  # never back
    assert publication.unpublished(ids) == [] and publication.backlog() == (0, None)
    assert "Events waiting for the bus: 0\n" in database_report(conn)
    assert len(publication.stored_since(timedelta(hours=1), 10)) == 2


def test_a_publication_whose_key_alone_moves_is_no_update_to_publish(conn, sample_killmails):
    """R2Z2 re-uploading the same values (a newer uploaded_at, the same zkb) moves the row's
    ordering key (migration 002) but is not a `Killmail Updated`: zkb_version stays."""
    doc = sample_killmails[0]
    store, publication = KillmailStore(conn), PublicationStore(conn)
    first = replace(record_of(doc, publish=True), uploaded_at=datetime(2026, 12, 1, 10, tzinfo=UTC))
    store.write([first])
    publication.mark_published({doc["killmail_id"]: 0})
    store.write([replace(first, uploaded_at=datetime(2026, 12, 1, 11, tzinfo=UTC))])
    assert publication.unpublished([doc["killmail_id"]]) == []
    store.write([replace(record_of(doc, publish=True, total=7e9), uploaded_at=datetime(2026, 12, 1, 12, tzinfo=UTC))])
    assert [(r["zkb_version"], r["published_version"]) for r in publication.unpublished([doc["killmail_id"]])] == [
        (1, 0)
    ]


@pytest.fixture
def fetcher_handler(aws, bus, database_url, monkeypatch):
    dlq_url = boto3.client("sqs").create_queue(QueueName="killstream-events-dlq")["QueueUrl"]
    for name, value in {
        "DATABASE_URL": database_url,
        "ESI_URL": "http://127.0.0.1:9",  # every package here is inline
        "DLQ_URL": dlq_url,
        "USER_AGENT": UA,
        "EVENT_BUS_NAME": bus[0],
    }.items():
        monkeypatch.setenv(name, value)
    metrics.clear_metrics()
    module = load_handler_module("fetcher")
    return lambda bodies: module.handler(
        {"Records": [sqs_record(b, str(uuid.uuid4())) for b in bodies]}, LambdaContext("fetcher", 30)
    )


def test_one_event_per_stored_killmail_one_per_update_none_for_a_redelivery(
    fetcher_handler, bus, database_url, sample_killmails
):
    docs = sample_killmails[:5]
    ids = {doc["killmail_id"] for doc in docs}
    with closing(connect(database_url)) as conn, conn, conn.cursor() as cur:  # a name the enricher already has
        cur.execute(
            "INSERT INTO entity_names (id, category, name) VALUES (%s, 'character', 'Known Pilot')",
            (docs[0]["victim"]["character_id"],),
        )

    assert fetcher_handler([body(doc) for doc in docs]) == {"batchItemFailures": []}
    events = seen(bus[1])
    assert sorted(e["detail"]["killmail_id"] for e in events) == sorted(ids)
    assert {(e["source"], e["detail-type"], e["detail"]["zkb_version"]) for e in events} == {(SOURCE, STORED, 0)}
    first = next(e["detail"] for e in events if e["detail"]["killmail_id"] == docs[0]["killmail_id"])
    assert first["victim"]["character_name"] == "Known Pilot"
    assert first["attacker_count"] == len(docs[0]["attackers"])
    assert first["attackers"]["corporation_ids"] == sorted(
        {a["corporation_id"] for a in docs[0]["attackers"] if "corporation_id" in a}
    )
    assert marks(database_url, ids) == dict.fromkeys(ids, (0, 0))

    assert fetcher_handler([body(doc) for doc in docs]) == {"batchItemFailures": []}  # delivered again
    assert seen(bus[1]) == []

    updated = docs[:2]
    assert fetcher_handler([body(doc, sequence_id=9, total=1.5e10) for doc in updated]) == {"batchItemFailures": []}
    events = seen(bus[1])
    assert sorted((e["detail-type"], e["detail"]["killmail_id"], e["detail"]["zkb_version"]) for e in events) == sorted(
        (UPDATED, doc["killmail_id"], 1) for doc in updated
    )
    assert {e["detail"]["total_value_millions"] for e in events} == {15000.0}
    assert marks(database_url, [d["killmail_id"] for d in updated]) == dict.fromkeys(
        (d["killmail_id"] for d in updated), (1, 1)
    )


def test_reconciled_killmails_publish_nothing_until_the_live_feed_updates_them(
    fetcher_handler, bus, database_url, sample_killmails
):
    """History is not news (docs/events.md, "What publishes"): a killmail the reconciler put on
    the queue (source history, no zkb) is stored as published; so is one it wrote from a raw
    file. The live feed's zkb for it later is an update, and is published."""
    queued, raw = sample_killmails[:2]
    esi, killmail_hash = split_hash(queued)
    history = Package(queued["killmail_id"], killmail_hash, {}, "history", esi=esi).to_body()
    assert fetcher_handler([history]) == {"batchItemFailures": []}
    with closing(connect(database_url)) as conn:
        esi, killmail_hash = split_hash(raw)
        KillmailStore(conn).write([KillmailRecord(parse_killmail(esi), killmail_hash, parse_zkb({}), "history")])
    ids = [queued["killmail_id"], raw["killmail_id"]]
    assert marks(database_url, ids) == dict.fromkeys(ids, (0, 0))
    assert seen(bus[1]) == []

    assert fetcher_handler([body(doc, sequence_id=7) for doc in (queued, raw)]) == {"batchItemFailures": []}
    events = seen(bus[1])
    assert sorted((e["detail-type"], e["detail"]["killmail_id"], e["detail"]["zkb_version"]) for e in events) == sorted(
        (UPDATED, killmail_id, 1) for killmail_id in ids
    )
    assert all("totalValue" in e["detail"]["zkb"] for e in events)
    assert marks(database_url, ids) == dict.fromkeys(ids, (1, 1))


def core_fetcher(database_url: str, client, *, dlq_url: str, bus_name: str, database: Database | None = None):
    from killstream.config import DatabaseConfig

    database = database or Database(DatabaseConfig(database_url, None, None, None))
    return Fetcher(
        esi=KillmailClient("http://127.0.0.1:9", UA),
        database=database,
        dead_letters=DeadLetterQueue(dlq_url),
        events=EventPublisher(EventBus(bus_name, client), database),
    )


def messages(bodies: list[str]) -> list[Message]:
    return [Message(f"m-{n}", b) for n, b in enumerate(bodies)]


def test_an_event_the_bus_refused_goes_with_the_redelivery_without_writing_again(
    aws, bus, database_url, sample_killmails
):
    docs = sample_killmails[:4]
    refused = docs[1]["killmail_id"]
    client = RecordingEvents(forward=boto3.client("events"), fail={refused: 1})
    dlq_url = boto3.client("sqs").create_queue(QueueName="dlq")["QueueUrl"]
    fetcher = core_fetcher(database_url, client, dlq_url=dlq_url, bus_name=bus[0])

    committed = []  # the killmails of every PutEvents, as another connection sees them then

    def put_events(Entries):
        ids = [json.loads(e["Detail"])["killmail_id"] for e in Entries]
        committed.append(set(marks(database_url, ids)) == set(ids))
        return RecordingEvents.put_events(client, Entries)

    client.put_events = put_events
    results = fetcher.process(messages([body(doc) for doc in docs]), time_left=30)
    assert committed == [True]  # after the commit, never before
    by_id = {r.killmail_id: r for r in results.values()}
    assert by_id[refused].retry and by_id[refused].error.error_type == "events_unpublished"
    assert "InternalFailure" in by_id[refused].error.message
    assert [r.disposition for k, r in by_id.items() if k != refused] == [Disposition.SAVED] * 3
    assert marks(database_url, [refused])[refused] == (0, None)  # stored, unpublished
    with closing(connect(database_url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT stored_at, (SELECT count(*) FROM attackers WHERE killmail_id = %s) "
            "FROM killmails WHERE killmail_id = %s",
            (refused, refused),
        )
        before = cur.fetchone()

    again = fetcher.process(messages([body(docs[1])]), time_left=30)  # SQS redelivers it
    (result,) = again.values()
    assert result.disposition is Disposition.SKIPPED and not result.retry
    with closing(connect(database_url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT stored_at, (SELECT count(*) FROM attackers WHERE killmail_id = %s) "
            "FROM killmails WHERE killmail_id = %s",
            (refused, refused),
        )
        assert cur.fetchone() == before  # not written again
    assert marks(database_url, [refused])[refused] == (0, 0)
    events = seen(bus[1])
    assert sorted(e["detail"]["killmail_id"] for e in events) == sorted(d["killmail_id"] for d in docs)  # once each


def test_a_bus_outage_gives_the_batch_back_stored_and_its_redelivery_publishes_it(
    aws, bus, database_url, sample_killmails
):
    docs = sample_killmails[:3]
    dlq_url = boto3.client("sqs").create_queue(QueueName="dlq")["QueueUrl"]
    client = RecordingEvents(forward=boto3.client("events"), call_errors=1)
    fetcher = core_fetcher(database_url, client, dlq_url=dlq_url, bus_name=bus[0])
    first = fetcher.process(messages([body(doc) for doc in docs]), time_left=30)
    assert all(r.retry and r.error.error_type == "events_unpublished" for r in first.values())
    assert "PutEvents failed" in next(iter(first.values())).error.message
    assert set(marks(database_url, [d["killmail_id"] for d in docs]).values()) == {(0, None)}
    assert seen(bus[1]) == []
    second = fetcher.process(messages([body(doc) for doc in docs]), time_left=30)
    assert {r.disposition for r in second.values()} == {Disposition.SKIPPED}
    assert len(seen(bus[1])) == 3 and len(client.calls) == 2


class MarkFails(Database):
    """A database whose writes of the published mark fail (the reads before them work)."""

    def run(self, operation):
        if "mark_published" in getattr(getattr(operation, "__code__", None), "co_names", ()):
            raise DatabaseUnavailable("PostgreSQL: connection lost")
        return super().run(operation)


def test_an_event_on_the_bus_but_not_marked_goes_again_and_consumers_see_its_version_twice(
    aws, bus, database_url, sample_killmails
):
    from killstream.config import DatabaseConfig

    doc = sample_killmails[0]
    dlq_url = boto3.client("sqs").create_queue(QueueName="dlq")["QueueUrl"]
    database = MarkFails(DatabaseConfig(database_url, None, None, None))
    fetcher = core_fetcher(database_url, boto3.client("events"), dlq_url=dlq_url, bus_name=bus[0], database=database)
    (result,) = fetcher.process(messages([body(doc)]), time_left=30).values()
    assert result.retry and "published, but not marked" in result.error.message
    healthy = core_fetcher(database_url, boto3.client("events"), dlq_url=dlq_url, bus_name=bus[0])
    (again,) = healthy.process(messages([body(doc)]), time_left=30).values()
    assert not again.retry
    events = seen(bus[1])  # at least once: the same killmail and version, twice
    assert [(e["detail"]["killmail_id"], e["detail"]["zkb_version"]) for e in events] == [(doc["killmail_id"], 0)] * 2


def test_without_time_left_nothing_is_put_and_the_messages_come_back(aws, bus, database_url, sample_killmails):
    dlq_url = boto3.client("sqs").create_queue(QueueName="dlq")["QueueUrl"]
    client = RecordingEvents()
    fetcher = core_fetcher(database_url, client, dlq_url=dlq_url, bus_name=bus[0])
    fetcher.write_reserve = 1.0
    (result,) = fetcher.process(messages([body(sample_killmails[0])]), time_left=2.0).values()
    assert result.retry and result.error.message.startswith("out_of_time") and client.calls == []
