"""The batch writer against a real PostgreSQL."""

import copy
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg2
import pytest

from killstream.killmail import parse_killmail, parse_zkb
from killstream.storage.connection import connect
from killstream.storage.migrations import migrate, migration_files
from killstream.storage.writer import KillmailRecord, KillmailStore, Outcome
from killstream_workstation import corpus
from killstream_workstation.cli.main import main
from tests.support.stored import assert_stored_as, assert_zkb, count_rows

PUBLISHED = datetime(2026, 12, 1, tzinfo=UTC)


def record(doc, zkb=None, *, sequence_id=None, source="r2z2", uploaded_at=None):
    """`uploaded_at`: seconds after PUBLISHED (None: the package had none, as RedisQ's)."""
    esi, killmail_hash = corpus.split_hash(doc)
    return KillmailRecord(
        killmail=parse_killmail(esi),
        killmail_hash=killmail_hash,
        zkb=parse_zkb(zkb if zkb is not None else corpus.zkb_for(doc)),
        source=source,
        sequence_id=sequence_id,
        uploaded_at=None if uploaded_at is None else PUBLISHED + timedelta(seconds=uploaded_at),
    )


def stored_key(conn, killmail_id):
    with conn.cursor() as cur:
        cur.execute("SELECT uploaded_at, sequence_id FROM killmails WHERE killmail_id = %s", (killmail_id,))
        uploaded_at, sequence_id = cur.fetchone()
    return (None if uploaded_at is None else (uploaded_at - PUBLISHED).total_seconds(), sequence_id)


def test_migrations_apply_to_an_empty_database_and_reapply_as_no_op(fresh_database_url):
    conn = connect(fresh_database_url)
    try:
        first = migrate(conn)
        second = migrate(conn)
        with conn.cursor() as cur:
            cur.execute("SELECT version FROM schema_migrations ORDER BY version")
            recorded = [row[0] for row in cur.fetchall()]
            cur.execute(
                "SELECT data_type FROM information_schema.columns "
                "WHERE table_name = 'attackers' AND column_name = 'character_id'"
            )
            assert cur.fetchone()[0] == "bigint"
    finally:
        conn.close()
    assert first == [version for version, _ in migration_files()] and first
    assert second == []
    assert recorded == first


def test_migrate_command_twice_succeeds(fresh_database_url, capsys):

    assert main(["migrate", "--database-url", fresh_database_url]) == 0
    assert main(["migrate", "--database-url", fresh_database_url]) == 0
    assert "nothing to apply" in capsys.readouterr().out


def test_every_real_killmail_round_trips(conn, real_killmails):
    store = KillmailStore(conn)
    records = [record(doc) for doc in real_killmails]
    outcomes = store.write(records)
    assert outcomes == [Outcome.INSERTED] * len(records)
    for doc in real_killmails:
        esi, killmail_hash = corpus.split_hash(doc)
        assert_stored_as(conn, esi, corpus.zkb_for(doc), killmail_hash=killmail_hash, source="r2z2")
    assert count_rows(conn, "killmails") == len(real_killmails)
    assert count_rows(conn, "attackers") == sum(len(d["attackers"]) for d in real_killmails)


def test_special_shapes_round_trip(conn, real_killmails):
    """NPC attackers without character ids, no position, no items, the 296-attacker killmail."""
    biggest = max(real_killmails, key=lambda d: len(d["attackers"]))
    assert len(biggest["attackers"]) == 296
    npc = next(d for d in real_killmails if any("character_id" not in a for a in d["attackers"]))
    no_items = copy.deepcopy(real_killmails[0])
    no_items.update(killmail_id=1, killmail_hash=corpus.fake_hash(1))
    no_items["victim"].pop("items", None)
    no_items["victim"].pop("position", None)
    store = KillmailStore(conn)
    assert store.write([record(biggest), record(npc), record(no_items)]) == [Outcome.INSERTED] * 3
    for doc in (biggest, npc, no_items):
        assert_stored_as(conn, corpus.split_hash(doc)[0])


def test_duplicates_in_one_batch_and_across_batches_are_stored_once(conn, sample_killmails):
    store = KillmailStore(conn)
    a, b = sample_killmails[:2]
    assert store.write([record(a), record(b), record(a)]) == [Outcome.INSERTED, Outcome.INSERTED, Outcome.DUPLICATE]
    assert store.write([record(a), record(b)]) == [Outcome.DUPLICATE, Outcome.DUPLICATE]
    assert count_rows(conn, "killmails") == 2
    assert count_rows(conn, "attackers") == len(a["attackers"]) + len(b["attackers"])
    assert count_rows(conn, "items") == len(parse_killmail(corpus.split_hash(a)[0]).items) + len(
        parse_killmail(corpus.split_hash(b)[0]).items
    )


def test_republished_zkb_updates_the_stored_values(conn, sample_killmails):
    store = KillmailStore(conn)
    doc = sample_killmails[3]
    first = corpus.zkb_for(doc)
    revalued = dict(first, totalValue=first["totalValue"] + 1e9, labels=first["labels"] + ["revalued"])
    assert store.write([record(doc, first, sequence_id=10)]) == [Outcome.INSERTED]
    assert store.write([record(doc, revalued, sequence_id=20)]) == [Outcome.ZKB_UPDATED]
    assert_zkb(conn, doc["killmail_id"], revalued)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT zkb_updated_at IS NOT NULL, sequence_id FROM killmails WHERE killmail_id = %s",
            (doc["killmail_id"],),
        )
        assert cur.fetchone() == (True, 20)
    # an older sequence delivered late does not win, nor does the same value count as an update
    assert store.write([record(doc, first, sequence_id=10)]) == [Outcome.DUPLICATE]
    assert store.write([record(doc, revalued, sequence_id=21)]) == [Outcome.DUPLICATE]
    assert_zkb(conn, doc["killmail_id"], revalued)


def test_an_older_publication_arriving_last_never_rolls_the_values_back(conn, sample_killmails):
    """Defect 6: the MERGE advanced sequence_id only when the zkb values differed, so 100 (A),
    200 (A), then 150 (B) left B under sequence 150."""
    store = KillmailStore(conn)
    for doc, timed in ((sample_killmails[7], False), (sample_killmails[8], True)):
        a = corpus.zkb_for(doc)
        b = dict(a, totalValue=a["totalValue"] + 1e9)

        def publication(zkb, sequence_id, doc=doc, timed=timed):
            return record(doc, zkb, sequence_id=sequence_id, uploaded_at=sequence_id if timed else None)

        assert store.write([publication(a, 100)]) == [Outcome.INSERTED]
        assert store.write([publication(a, 200)]) == [Outcome.DUPLICATE]  # nothing to see: the key moved
        with conn.cursor() as cur:
            cur.execute("SELECT sequence_id FROM killmails WHERE killmail_id = %s", (doc["killmail_id"],))
            assert cur.fetchone() == (200,)
        assert store.write([publication(b, 150)]) == [Outcome.DUPLICATE]
        assert_zkb(conn, doc["killmail_id"], a)
        assert stored_key(conn, doc["killmail_id"]) == ((200.0, 200) if timed else (None, 200))


def test_an_in_place_update_keeps_its_sequence_and_wins_by_its_newer_upload_time(conn, sample_killmails):
    """Defect 9, the store's half: zKillboard rewrites {S}.json with the same sequence_id and a
    newer uploaded_at; ordered by sequence_id alone, the update was a duplicate."""
    store = KillmailStore(conn)
    doc = sample_killmails[9]
    first = corpus.zkb_for(doc)
    ganked = dict(first, totalValue=first["totalValue"] * 2, labels=first["labels"] + ["ganked"])
    assert store.write([record(doc, first, sequence_id=500, uploaded_at=10)]) == [Outcome.INSERTED]
    assert store.write([record(doc, ganked, sequence_id=500, uploaded_at=70)]) == [Outcome.ZKB_UPDATED]
    assert_zkb(conn, doc["killmail_id"], ganked) and stored_key(conn, doc["killmail_id"]) == (70.0, 500)
    # the first version of the file, delivered again late, loses; so does a same-key redelivery
    assert store.write([record(doc, first, sequence_id=500, uploaded_at=10)]) == [Outcome.DUPLICATE]
    assert store.write([record(doc, first, sequence_id=500, uploaded_at=70)]) == [Outcome.DUPLICATE]
    # upload time decides before sequence: a later file published earlier is older
    assert store.write([record(doc, first, sequence_id=900, uploaded_at=60)]) == [Outcome.DUPLICATE]
    assert_zkb(conn, doc["killmail_id"], ganked)
    # inside one batch too: the newest publication is the one written
    other = sample_killmails[10]
    old, new = corpus.zkb_for(other), dict(corpus.zkb_for(other), totalValue=1.5)
    assert store.write(
        [record(other, new, sequence_id=3, uploaded_at=90), record(other, old, sequence_id=3, uploaded_at=20)]
    ) == [Outcome.INSERTED, Outcome.DUPLICATE]
    assert_zkb(conn, other["killmail_id"], new)


def test_packages_without_an_upload_time_compare_as_before(conn, sample_killmails):
    """RedisQ packages carry neither uploaded_at nor sequence_id: their values apply when they
    differ from the stored ones, and leave the stored ordering key alone. A row stored before
    uploaded_at existed (NULL) takes an in-place update of its own sequence when the values differ."""
    store = KillmailStore(conn)
    doc = sample_killmails[11]
    first = corpus.zkb_for(doc)
    revalued = dict(first, totalValue=first["totalValue"] + 3)
    assert store.write([record(doc, first, source="redisq")]) == [Outcome.INSERTED]
    assert store.write([record(doc, first, source="redisq")]) == [Outcome.DUPLICATE]
    assert store.write([record(doc, revalued, source="redisq")]) == [Outcome.ZKB_UPDATED]
    assert stored_key(conn, doc["killmail_id"]) == (None, None)
    legacy = sample_killmails[12]
    assert store.write([record(legacy, corpus.zkb_for(legacy), sequence_id=40)]) == [Outcome.INSERTED]
    update = dict(corpus.zkb_for(legacy), totalValue=9.0)
    assert store.write([record(legacy, update, sequence_id=40, uploaded_at=5)]) == [Outcome.ZKB_UPDATED]
    assert stored_key(conn, legacy["killmail_id"]) == (5.0, 40)


def test_the_total_droppable_value_is_stored(conn, sample_killmails):
    """Item 10: zkb.totalDroppableValue is kept as zkb_droppable_value, numeric."""
    doc = sample_killmails[13]
    zkb = dict(corpus.zkb_for(doc), totalDroppableValue=31000000.55)
    KillmailStore(conn).write([record(doc, zkb)])
    assert_zkb(conn, doc["killmail_id"], zkb)
    with conn.cursor() as cur:
        cur.execute("SELECT zkb_droppable_value FROM killmails WHERE killmail_id = %s", (doc["killmail_id"],))
        assert cur.fetchone()[0] == Decimal("31000000.55")


def test_newest_sequence_wins_inside_one_batch(conn, sample_killmails):
    doc = sample_killmails[4]
    old = corpus.zkb_for(doc)
    new = dict(old, totalValue=12345.5)
    outcomes = KillmailStore(conn).write([record(doc, new, sequence_id=8), record(doc, old, sequence_id=7)])
    assert outcomes == [Outcome.INSERTED, Outcome.DUPLICATE]
    assert_zkb(conn, doc["killmail_id"], new)


def test_a_record_without_zkb_never_replaces_stored_values_and_a_live_one_fills_them_in(conn, sample_killmails):
    """History and backfill records carry no zkb (docs/protocols.md, "R2Z2 history")."""
    store = KillmailStore(conn)
    live, recovered = sample_killmails[6], sample_killmails[7]
    assert store.write([record(live, sequence_id=5)]) == [Outcome.INSERTED]
    assert store.write([record(live, {}, source="history")]) == [Outcome.DUPLICATE]
    assert_zkb(conn, live["killmail_id"], corpus.zkb_for(live))
    assert store.write([record(recovered, {}, source="history")]) == [Outcome.INSERTED]
    assert_zkb(conn, recovered["killmail_id"], {})
    assert store.write([record(recovered, sequence_id=9)]) == [Outcome.ZKB_UPDATED]
    assert_zkb(conn, recovered["killmail_id"], corpus.zkb_for(recovered))
    with conn.cursor() as cur:
        cur.execute("SELECT source, sequence_id FROM killmails WHERE killmail_id = %s", (recovered["killmail_id"],))
        assert cur.fetchone() == ("history", 9)  # where the row came from; whose values it holds
    # in one batch, the record with zkb values wins over the one without, whatever their order
    both = sample_killmails[8]
    assert store.write([record(both), record(both, {}, source="history")]) == [Outcome.INSERTED, Outcome.DUPLICATE]
    assert_zkb(conn, both["killmail_id"], corpus.zkb_for(both))


def test_stored_documents_finds_what_is_there_in_one_query(conn, sample_killmails):
    store = KillmailStore(conn)
    store.write([record(d) for d in sample_killmails[:3]])
    ids = [d["killmail_id"] for d in sample_killmails[:5]]
    documents = store.stored_documents(ids)
    assert set(documents) == set(ids[:3])
    assert documents[ids[0]] == corpus.split_hash(sample_killmails[0])[0]
    assert store.stored_documents([]) == {}


def test_text_that_needs_escaping_survives_copy(conn, sample_killmails):
    doc = copy.deepcopy(sample_killmails[5])
    doc["note"] = 'tab\there\nnewline \\backslash "quote" ünïcode'
    zkb = dict(corpus.zkb_for(doc), labels=['a"b', "c\\d", "e\tf", "{g,h}"], totalValue=0.1)
    KillmailStore(conn).write([record(doc, zkb)])
    assert_stored_as(conn, corpus.split_hash(doc)[0], zkb)
    with conn.cursor() as cur:
        cur.execute("SELECT zkb_total_value FROM killmails WHERE killmail_id = %s", (doc["killmail_id"],))
        assert cur.fetchone()[0] == Decimal("0.1")


def test_failed_batch_leaves_nothing_behind(conn, sample_killmails):
    store = KillmailStore(conn)
    good = record(sample_killmails[0])
    conn.close()
    with pytest.raises(psycopg2.InterfaceError):
        store.write([good])


def test_a_newer_zkb_racing_the_first_insert_still_wins(database_url, sample_killmails):
    """Writer B carries newer zkb values for a killmail writer A is inserting right now: B waits
    for A's commit, then applies its values rather than taking the killmail as a duplicate."""
    doc = sample_killmails[6]
    old = corpus.zkb_for(doc)
    new = dict(old, totalValue=old["totalValue"] + 5e8)
    a, b = connect(database_url), connect(database_url)
    try:
        # A's insert, its transaction left open
        with a.cursor() as cur:
            assert KillmailStore(a).merge(cur, [record(doc, old, sequence_id=1)]) == {
                doc["killmail_id"]: Outcome.INSERTED
            }
        results = {}
        writer_b = threading.Thread(
            target=lambda: results.update(b=KillmailStore(b).write([record(doc, new, sequence_id=2)]))
        )
        writer_b.start()
        writer_b.join(timeout=0.5)
        assert writer_b.is_alive(), "B should wait for A's uncommitted row"
        a.commit()
        writer_b.join(timeout=10)
        assert results["b"] == [Outcome.ZKB_UPDATED]
        assert_zkb(b, doc["killmail_id"], new)
    finally:
        a.close()
        b.close()
