"""Names end to end: the local pipeline replays the corpus with the enricher on its schedule, as
`killstream run --replay` does. Afterwards every id of the stored killmails is named,
`killmail_summary` returns every killmail with its names, ESI was asked once per new system,
constellation, region, type, group and category and ceil(ids / 1000) times per run for names,
and `killstream enrich` afterwards finds nothing to ask."""

from __future__ import annotations

import math

from killstream.storage.connection import connect
from killstream_workstation import corpus
from killstream_workstation.cli.main import main
from tests.support.names import fetch_all, ids_of, lookups_needed


def all_named(url: str, expected: int) -> bool:
    conn = connect(url)
    try:
        ((named,),) = fetch_all(conn, "SELECT count(*) FROM entity_names WHERE error IS NULL")
        ((unfinished,),) = fetch_all(
            conn,
            """SELECT (SELECT count(*) FROM killmails k WHERE NOT EXISTS (
                          SELECT 1 FROM solar_systems s WHERE s.solar_system_id = k.solar_system_id
                          AND s.region_name IS NOT NULL))
                    + (SELECT count(*) FROM killmails k WHERE NOT EXISTS (
                          SELECT 1 FROM item_types t WHERE t.type_id = k.victim_ship_type_id
                          AND t.category_name IS NOT NULL))""",
        )
        return named == expected and unfinished == 0
    finally:
        conn.close()


def test_a_replay_names_every_id_with_the_promised_esi_calls(pipeline_factory, database_url, capsys):
    docs = corpus.sample()
    ids = ids_of(docs)
    pipeline = pipeline_factory(docs, inline_ratio=0.5, enrich_interval=0.5)
    assert pipeline.wait_until(lambda: all_named(database_url, len(ids.entities)), timeout=180)
    # the run under way when everything was named finishes, then the schedule stops
    assert pipeline.wait_until(lambda: pipeline.enrich_runs and pipeline.enrich_runs[-1]["pending"] == 0, timeout=60)
    pipeline.stop()
    esi = pipeline.replay.esi

    conn = connect(database_url)
    try:
        entities = dict(fetch_all(conn, "SELECT id, name FROM entity_names WHERE error IS NULL"))
        assert set(entities) == ids.entities and all(entities.values())
        rows = fetch_all(
            conn,
            """SELECT killmail_id, solar_system_name, region_name, victim_ship_type_name, victim_ship_group_name,
                      victim_corporation_id, victim_corporation_name FROM killmail_summary""",
        )
    finally:
        conn.close()
    assert sorted(row[0] for row in rows) == sorted(doc["killmail_id"] for doc in docs)
    for _, system, region, ship, group, corporation_id, corporation in rows:
        assert system and region and ship and group
        expected = esi.universe.name("corporation", corporation_id) if corporation_id else None
        assert corporation == expected

    # One GET per new id of every kind, cached thereafter; every entity id sent to
    # /universe/names/ once, in ceil(ids of the run / 1000) calls per run.
    assert {kind: n for kind, n in esi.route_hits.items() if kind not in ("names", "killmails")} == lookups_needed(
        esi.universe
    )
    assert max(esi.lookups.values()) == 1
    runs = pipeline.enrich_runs
    assert sum(run["names_asked"] for run in runs) == len(ids.entities)
    assert esi.route_hits["names"] == sum(math.ceil(run["names_asked"] / 1000) for run in runs)
    assert sorted(i for batch in esi.names_batches for i in batch) == sorted(ids.entities)

    # `killstream enrich` afterwards: nothing pending, nothing asked.
    with type(esi)() as fresh:
        capsys.readouterr()
        status = main(["enrich", "--database-url", database_url, "--esi-url", fresh.url, "--user-agent", "t/1 (t)"])
        out = capsys.readouterr().out
        assert status == 0 and fresh.route_hits.total() == 0, out
    assert f"{len(docs)} killmails read: 0 ids named, 0 unresolvable, 0 pending" in out


def test_a_stopping_replay_names_what_it_stored_after_the_last_scheduled_run(pipeline_factory, database_url):
    """The schedule here would first fire in an hour: only the run a stopping replay makes after its
    last batch can name anything (README's Quick start queries rely on it)."""
    docs = corpus.sample()[:10]
    pipeline = pipeline_factory(docs, inline_ratio=1.0, enrich_interval=3600)
    assert pipeline.wait_until(lambda: pipeline.stats.outcomes["saved"] == len(docs), timeout=120)
    assert pipeline.enrich_runs == []
    pipeline.stop()
    assert len(pipeline.enrich_runs) == 1
    assert all_named(database_url, len(ids_of(docs).entities))
