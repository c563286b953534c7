"""The enricher against the local ESI over real HTTP and a real PostgreSQL: every id of the stored
killmails named (or recorded unresolvable), with exactly the ESI calls the accounting promises
(docs/protocols.md, "ESI"), none the second time; unknown ids found by splitting their batch;
bad answers an error for their id alone; ESI trouble leaves the rest for a later run."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from killstream.config import DatabaseConfig
from killstream.enrich.enricher import Enricher
from killstream.esi.universe import UniverseClient
from killstream.storage.connection import Database
from killstream_workstation import corpus
from killstream_workstation.names import NameBook
from killstream_workstation.simulators.esi import EsiServer
from killstream_workstation.simulators.universe import constellation_of
from killstream_workstation.stats import database_report
from tests.support.fakes import FakeClock
from tests.support.names import fetch_all, ids_of, lookups_needed, names_calls_needed, store_killmails

UA = "killstream-tests/0.1 (tests@example.com)"


@pytest.fixture
def docs():
    return corpus.sample()


@pytest.fixture
def esi(docs):
    with EsiServer() as server:
        server.add_many(docs)
        yield server


@pytest.fixture
def stored(conn, docs):
    store_killmails(conn, docs)
    return docs


@pytest.fixture
def make_enricher(database_url):
    made = []

    def make(esi, **options):
        client_options = {key: options.pop(key) for key in ("sleep", "jitter") if key in options}
        client_options.setdefault("jitter", lambda: 0.5)
        if "clock" in options:
            client_options["clock"] = options["clock"]
        client = UniverseClient(esi.url, UA, split_pause=options.pop("split_pause", 0.0), **client_options)
        enricher = Enricher(esi=client, database=Database(DatabaseConfig(database_url, None, None, None)), **options)
        made.append(enricher)
        return enricher

    yield make
    for enricher in made:
        enricher.database.close()


def named_entities(conn) -> dict[int, tuple]:
    return {row[0]: row[1:] for row in fetch_all(conn, "SELECT id, category, name, error FROM entity_names")}


def test_one_run_names_every_id_with_the_calls_the_accounting_promises_and_a_second_run_none(
    conn, esi, stored, make_enricher
):
    ids = ids_of(stored)
    report = make_enricher(esi).run(lambda: 60.0)

    assert report.stopped_because is None and report.pending == 0
    entities = named_entities(conn)
    assert set(entities) == ids.entities
    for id_, (category, name, error) in entities.items():
        assert error is None and name == esi.universe.name(category, id_)
        assert category == esi.universe.entities[id_]
    systems = fetch_all(conn, "SELECT solar_system_id, solar_system_name, region_name, error FROM solar_systems")
    assert {row[0] for row in systems} == ids.systems and all(row[1] and row[2] and not row[3] for row in systems)
    types = fetch_all(conn, "SELECT type_id, type_name, group_name, category_name, error FROM item_types")
    assert {row[0] for row in types} == ids.types and all(row[1] and row[2] and row[3] and not row[4] for row in types)
    assert report.named == len(ids.entities) + len(ids.systems) + len(ids.types) and report.unresolvable == 0

    # ceil(unknown entity ids / 1000) names calls, one GET per new id of every kind, none twice
    expected = {"names": names_calls_needed(len(ids.entities))} | lookups_needed(esi.universe)
    assert dict(esi.route_hits) == expected
    assert max(esi.lookups.values()) == 1
    assert sorted(id_ for batch in esi.names_batches for id_ in batch) == sorted(ids.entities)
    assert all(len(batch) <= 1000 for batch in esi.names_batches)
    assert report.esi["requests"] == sum(expected.values())

    before = esi.route_hits.total()
    again = make_enricher(esi).run(lambda: 60.0)
    assert esi.route_hits.total() == before and again.named == 0 and again.pending == 0


def test_the_view_has_one_row_per_killmail_with_its_names(conn, esi, stored, make_enricher):
    make_enricher(esi).run(lambda: 60.0)
    rows = fetch_all(
        conn,
        """SELECT killmail_id, solar_system_name, region_name, security_status, victim_ship_type_name,
                  victim_ship_group_name, victim_corporation_name, attacker_count, final_blow_ship_type_id,
                  zkillboard_url FROM killmail_summary""",
    )
    assert sorted(row[0] for row in rows) == sorted(doc["killmail_id"] for doc in stored)
    universe = esi.universe
    by_id = {doc["killmail_id"]: doc for doc in stored}
    for killmail_id, system, region, security, ship, group, corporation, attackers, final_ship, url in rows:
        doc = by_id[killmail_id]
        assert system == universe.name("system", doc["solar_system_id"])
        assert region and security is not None and ship and group
        if doc["victim"].get("corporation_id"):
            assert corporation == universe.name("corporation", doc["victim"]["corporation_id"])
        assert attackers == len(doc["attackers"])
        final = [a for a in doc["attackers"] if a["final_blow"]]
        assert final_ship == (final[0].get("ship_type_id") if final else None)
        assert url == f"https://zkillboard.com/kill/{killmail_id}/"


def test_an_unknown_id_fails_its_batch_which_is_split_until_it_stands_alone(conn, esi, stored, make_enricher):
    ids = sorted(ids_of(stored).entities)
    unknown = ids[len(ids) // 3]
    esi.universe.forget(unknown)
    report = make_enricher(esi).run(lambda: 60.0)

    entities = named_entities(conn)
    assert set(entities) == set(ids)
    category, name, error = entities[unknown]
    assert (category, name) == (None, None) and "404" in error
    assert all(row[2] is None for id_, row in entities.items() if id_ != unknown)
    assert report.unresolvable == 1 and report.stopped_because is None
    # Halving: at most one 404 per level. A half proven to hold the unknown id (its parent failed,
    # its sibling did not) is split without being asked, so at most two calls per level.
    failed = [batch for batch in esi.names_batches if unknown in batch]
    levels = (len(failed[0]) - 1).bit_length()
    assert len(failed) <= 1 + levels
    assert len(esi.names_batches) <= names_calls_needed(len(ids)) + 2 * levels
    assert sorted({id_ for batch in esi.names_batches for id_ in batch}) == ids

    before = esi.route_hits["names"]
    make_enricher(esi).run(lambda: 60.0)
    assert esi.route_hits["names"] == before  # not asked again on every run


def test_an_unresolvable_id_is_asked_again_once_its_retry_time_has_come(conn, esi, stored, make_enricher):
    unknown = sorted(ids_of(stored).entities)[0]
    esi.universe.forget(unknown)
    make_enricher(esi).run(lambda: 60.0)
    esi.universe.forgotten.clear()
    make_enricher(esi, retry_after=timedelta(0)).run(lambda: 60.0)
    assert named_entities(conn)[unknown][2] is None
    assert esi.names_batches[-1] == [unknown]


def test_bad_answers_are_an_error_for_their_id_only(conn, esi, stored, make_enricher):
    ids = ids_of(stored)
    entity_ids = sorted(ids.entities)
    answer = esi.universe.names(entity_ids[:1000])
    assert answer is not None
    answer[0]["name"] = 42  # a name that is not text
    answer[1]["category"] = "spaceship"  # a category we do not know
    answer[2]["name"] = "\ud800"  # not storable text
    bad = [item["id"] for item in answer[:3]]
    left_out = answer.pop(3)["id"]
    esi.faults.script(body=json.dumps(answer).encode(), when="/universe/names/")
    system = sorted(ids.systems)[0]
    esi.faults.script(body=json.dumps({"name": "Nowhere", "security_status": 0.5}).encode(), when=f"/systems/{system}/")

    report = make_enricher(esi).run(lambda: 60.0)
    assert report.stopped_because is None
    entities = named_entities(conn)
    errors = {id_: row[2] for id_, row in entities.items() if row[2]}
    assert set(errors) == {*bad, left_out}
    assert "not text" in errors[bad[0]] and "spaceship" in errors[bad[1]] and "surrogate" in errors[bad[2]]
    assert "left it out" in errors[left_out]
    assert len(entities) == len(ids.entities)
    (row,) = fetch_all(conn, "SELECT solar_system_name, error FROM solar_systems WHERE solar_system_id = %s", (system,))
    assert row[0] is None and "without a constellation" in row[1]
    other_systems = fetch_all(
        conn, "SELECT count(*) FROM solar_systems WHERE error IS NULL AND region_name IS NOT NULL"
    )
    assert other_systems == [(len(ids.systems) - 1,)]
    assert report.unresolvable == 5


def test_esi_down_leaves_everything_pending_and_the_next_run_finishes(conn, esi, stored, make_enricher):
    esi.faults.script(503, when="/universe/", times=None)
    report = make_enricher(esi).run(lambda: 60.0)
    assert report.stopped_because == "esi_unavailable"
    assert report.pending > 0 and named_entities(conn) == {}
    esi.faults.clear()
    report = make_enricher(esi).run(lambda: 60.0)
    assert report.stopped_because is None and report.pending == 0
    assert len(named_entities(conn)) == len(ids_of(stored).entities)


def test_a_failed_constellation_keeps_its_systems_and_only_it_is_asked_again(conn, esi, stored, make_enricher):
    system = sorted(ids_of(stored).systems)[0]
    constellation = constellation_of(system)
    esi.faults.script(503, when=f"/constellations/{constellation}/", times=3)
    first = make_enricher(esi, parallelism=1).run(lambda: 60.0)
    assert first.stopped_because == "esi_unavailable"
    (row,) = fetch_all(
        conn,
        "SELECT solar_system_name, constellation_id, region_name FROM solar_systems WHERE solar_system_id = %s",
        (system,),
    )
    assert row[0] and row[1] == constellation and row[2] is None
    second = make_enricher(esi).run(lambda: 60.0)
    assert second.stopped_because is None
    assert esi.lookups[("systems", system)] == 1 and esi.lookups[("constellations", constellation)] == 4


def test_error_limit_and_rate_limit_are_honoured_through_the_shared_client(conn, esi, stored, make_enricher):
    clock = FakeClock()
    esi.faults.script(429, headers={"Retry-After": "7"}, when="/universe/names/")
    report = make_enricher(esi, clock=clock, sleep=clock.sleep).run(lambda: 600.0)
    assert 7 in clock.sleeps and report.stopped_because is None and report.esi["rate_limited"] == 1

    esi.faults.script(420, headers={"X-ESI-Error-Limit-Reset": "30"}, when="/universe/", times=1)
    conn_ids = sorted(ids_of(stored).entities)
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM entity_names WHERE id = ANY(%s)", (conn_ids[:5],))
    limited = make_enricher(esi, clock=clock, sleep=clock.sleep)
    report = limited.run(lambda: 600.0)
    assert report.stopped_because == "esi_error_limited" and report.pending == 5
    hits = esi.route_hits.total()
    assert limited.run(lambda: 600.0).stopped_because == "esi_error_limited" and esi.route_hits.total() == hits
    clock.advance(31)
    report = limited.run(lambda: 600.0)
    assert report.stopped_because is None and report.pending == 0 and report.named == 5


def test_splitting_stops_while_little_of_the_error_limit_is_left(conn, esi, stored, make_enricher):
    ids = sorted(ids_of(stored).entities)
    esi.universe.forget(ids[0])
    esi.faults.script(
        404, headers={"X-ESI-Error-Limit-Remain": "15", "X-ESI-Error-Limit-Reset": "40"}, when="/universe/names/"
    )
    report = make_enricher(esi).run(lambda: 60.0)
    assert report.stopped_because == "esi_error_limited"
    assert esi.route_hits["names"] == 1 and report.pending > 0


def test_the_watermark_moves_past_settled_killmails_only_and_pages_walk_the_backlog(conn, esi, docs, make_enricher):
    store_killmails(conn, docs[:40])
    enricher = make_enricher(esi, page_size=7, settle=timedelta(0))
    report = enricher.run(lambda: 60.0)
    assert report.killmails == 40 and report.watermark is not None
    assert report.watermark.killmail_id == max(doc["killmail_id"] for doc in docs[:40])
    assert fetch_all(conn, "SELECT killmail_id FROM enrichment_watermark") == [(report.watermark.killmail_id,)]

    store_killmails(conn, docs[40:])
    recent = make_enricher(esi, page_size=7).run(lambda: 60.0)  # settle: 5 minutes, so nothing settles
    assert recent.killmails == len(docs) - 40 and recent.pending == 0
    assert recent.watermark == report.watermark
    assert len(named_entities(conn)) == len(ids_of(docs).entities)
    # the recent ones are walked again until they settle, and cost no ESI call
    hits = esi.route_hits.total()
    again = make_enricher(esi, page_size=7).run(lambda: 60.0)
    assert again.killmails == len(docs) - 40 and esi.route_hits.total() == hits


def test_the_console_and_stats_speak_names_once_the_enricher_has_them(conn, database_url, esi, stored, make_enricher):
    doc = next(d for d in stored if d["victim"].get("character_id") and d["victim"].get("corporation_id"))
    victim, universe = doc["victim"], esi.universe
    line = {
        "victim_ship_type_id": victim["ship_type_id"],
        "victim_character_id": victim["character_id"],
        "victim_corporation_id": victim["corporation_id"],
        "solar_system_id": doc["solar_system_id"],
    }
    book = NameBook(database_url)
    try:
        before = book.describe(line)
        assert before == (
            f"type {victim['ship_type_id']} (character {victim['character_id']}, "
            f"corporation {victim['corporation_id']}) in system {doc['solar_system_id']}"
        )
        make_enricher(esi).run(lambda: 60.0)
        ship, system = universe.name("type", victim["ship_type_id"]), universe.name("system", doc["solar_system_id"])
        character = universe.name("character", victim["character_id"])
        corporation = universe.name("corporation", victim["corporation_id"])
        assert book.describe(line) == f"{ship} ({character}, {corporation}) in {system}"
    finally:
        book.close()
    report = database_report(conn)
    busiest = max(stored, key=lambda d: d["killmail_time"])["solar_system_id"]
    assert universe.name("system", busiest) in report
    assert f"{len(ids_of(stored).entities):,} characters/corporations/alliances/factions" in report


def test_the_console_keeps_ids_when_the_database_does_not_answer():
    book = NameBook("postgresql://nobody@127.0.0.1:1/none")
    line = {"victim_ship_type_id": 587, "victim_corporation_id": 98000001, "solar_system_id": 30000142}
    assert book.describe(line) == "type 587 (corporation 98000001) in system 30000142"


def test_a_run_ends_between_pages_once_the_invocation_has_no_time_left(conn, esi, docs, make_enricher):
    store_killmails(conn, docs[:30])
    left = iter([60.0, 60.0])  # the start and the first page; then the invocation is out of time (or stopped)
    report = make_enricher(esi, page_size=10, settle=timedelta(0)).run(lambda: next(left, 0.0))
    assert report.stopped_because == "out_of_time" and report.killmails == 10
    assert report.watermark is not None and report.pending > 0
    finished = make_enricher(esi, page_size=10, settle=timedelta(0)).run(lambda: 60.0)
    assert finished.stopped_because is None and finished.killmails == 20 and finished.pending == 0


def test_a_stop_asked_for_ends_the_run_between_pages_with_its_time_intact(conn, esi, docs, make_enricher):
    """The local runner's Ctrl+C no longer drops the remaining time to 0 (issue 10: stopping is
    not dying, so the poller can finish a popped package); the enricher reads the stop itself."""
    store_killmails(conn, docs[:30])
    asked = iter([False])  # the first page goes; then a stop is asked for
    report = make_enricher(esi, page_size=10, settle=timedelta(0)).run(lambda: 60.0, lambda: next(asked, True))
    assert report.stopped_because == "out_of_time" and report.killmails == 10 and report.pending > 0
