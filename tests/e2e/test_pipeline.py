"""The whole local pipeline — the real handlers, moto's SQS/SSM over HTTP, the local R2Z2 and
ESI, PostgreSQL — replaying N killmails: exactly N stored, every field equal to its source."""

from killstream.storage.connection import connect
from killstream_workstation import corpus
from killstream_workstation.local.state import RunState
from tests.support.stored import assert_stored_as, count_rows


def stored_count(url: str) -> int:
    conn = connect(url)
    try:
        return count_rows(conn, "killmails")
    finally:
        conn.close()


def test_replay_stores_every_killmail_exactly_once_and_equal_to_its_source(pipeline_factory, database_url):
    docs = corpus.sample()
    pipeline = pipeline_factory(docs, inline_ratio=0.5)
    assert pipeline.wait_until(lambda: stored_count(database_url) >= len(docs), timeout=120), (
        f"stored {stored_count(database_url)} of {len(docs)}"
    )
    assert pipeline.refresh_dlq_count() == 0
    pipeline.stop()

    conn = connect(database_url)
    try:
        assert count_rows(conn, "killmails") == len(docs)
        assert count_rows(conn, "attackers") == sum(len(d["attackers"]) for d in docs)
        for doc in docs:
            esi, killmail_hash = corpus.split_hash(doc)
            assert_stored_as(conn, esi, corpus.zkb_for(doc), killmail_hash=killmail_hash, source="r2z2")
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM killmails WHERE source = 'r2z2' AND sequence_id IS NOT NULL")
            assert cur.fetchone()[0] == len(docs)
    finally:
        conn.close()
    # metadata-only packages were fetched from ESI, inline ones were not
    esi_hits = pipeline.replay.esi.total_hits
    assert 0 < esi_hits < len(docs)
    assert pipeline.stats.outcomes["saved"] == len(docs)


def test_a_second_run_over_the_same_feed_stores_nothing_twice(pipeline_factory, database_url):
    docs = corpus.sample()[:30]
    first = pipeline_factory(docs)
    assert first.wait_until(lambda: stored_count(database_url) >= 10, timeout=60)
    first.stop()
    # a new pipeline on the same database replays the same feed from the start: every
    # killmail arrives again, and the database still holds each exactly once
    second = pipeline_factory(docs)
    assert second.wait_until(
        lambda: second.stats.outcomes["skipped"] + second.stats.outcomes["saved"] >= len(docs), timeout=60
    )
    second.stop()
    assert stored_count(database_url) == len(docs)


def test_a_stopped_replay_resumes_at_its_cursor_with_the_messages_it_held(pipeline_factory, database_url, tmp_path):
    docs = corpus.sample()[:60]
    # ESI slow: the fetcher still holds work when the first run stops
    first = pipeline_factory(docs, state_dir=tmp_path, esi_latency=0.3)
    assert first.wait_until(lambda: first.stats.received >= 30, timeout=60)
    first.stop()
    saved = RunState(tmp_path).load(first.feed())
    assert saved is not None and int(saved.cursor) >= 30 and saved.published == len(docs)
    assert saved.queue, "nothing was held at the stop"
    assert stored_count(database_url) < len(docs)
    second = pipeline_factory(docs, state_dir=tmp_path)
    assert second.resumed == saved
    assert second.wait_until(lambda: stored_count(database_url) >= len(docs), timeout=120)
    second.stop()
    # the second run read only what the first had not, and nothing was stored twice
    assert second.stats.received == len(docs) - int(saved.cursor)
    assert first.stats.outcomes["saved"] + second.stats.outcomes["saved"] == len(docs) == stored_count(database_url)
    # another feed does not take the state up
    other = pipeline_factory(docs[:10], state_dir=tmp_path)
    assert other.resumed is None


def test_a_redisq_replay_is_served_by_a_local_redisq_not_the_internet(pipeline_factory, database_url):
    docs = corpus.sample()[:12]
    pipeline = pipeline_factory(docs, source="redisq", inline_ratio=0.5)
    assert pipeline.wait_until(lambda: stored_count(database_url) >= len(docs), timeout=120), (
        f"stored {stored_count(database_url)} of {len(docs)}"
    )
    url = pipeline.replay.url
    pipeline.stop()
    assert url.startswith("http://127.0.0.1:") and url.endswith("/listen.php")
    assert any(request.path == "/listen.php" for request in pipeline.replay.feed.requests)
    conn = connect(database_url)
    try:
        for doc in docs:
            esi, killmail_hash = corpus.split_hash(doc)
            assert_stored_as(conn, esi, corpus.zkb_for(doc), killmail_hash=killmail_hash, source="redisq")
    finally:
        conn.close()
    # RedisQ's metadata-only packages were fetched from the local ESI
    assert 0 < pipeline.replay.esi.total_hits < len(docs)
    assert pipeline.stats.handled == {doc["killmail_id"] for doc in docs}
