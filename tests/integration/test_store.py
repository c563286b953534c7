"""The batch writer against a real PostgreSQL."""

import copy
import threading
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


def record(doc, zkb=None, *, sequence_id=None, source="r2z2"):
    esi, killmail_hash = corpus.split_hash(doc)
    return KillmailRecord(
        killmail=parse_killmail(esi),
        killmail_hash=killmail_hash,
        zkb=parse_zkb(zkb if zkb is not None else corpus.zkb_for(doc)),
        source=source,
        sequence_id=sequence_id,
    )


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
