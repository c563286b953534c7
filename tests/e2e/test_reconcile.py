"""Every killmail, proven (issue 13's done-when): ~2,000 killmails over four days through the
local R2Z2 and the whole local pipeline, stopped and started again mid-way; a few hundred expire
while it is down (a gap) and some are permanently invalid at ESI (the DLQ). Then
`killstream reconcile`: every killmail history lists is stored exactly once, equal to its source,
each day's row says complete or incomplete with the exact invalid ids, and a second reconcile
downloads nothing."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from killstream.killmail import parse_killmail
from killstream.storage.connection import connect
from killstream_workstation import corpus
from killstream_workstation.cli.main import main
from killstream_workstation.local.console import RunStats
from killstream_workstation.local.pipeline import LocalPipeline, PipelineSettings
from killstream_workstation.local.state import RunState
from killstream_workstation.simulators.esi import EsiServer
from killstream_workstation.simulators.r2z2 import R2Z2Server
from tests.support.stored import assert_stored_as, count_rows

UA = "killstream-tests/1.0 (ci@example.com)"
TODAY = datetime.now(UTC).date()
DAYS = [TODAY - timedelta(days=n) for n in (5, 4, 3, 2)]
COUNT = 2000
EXPIRED = range(900, 1200)  # published, and gone from R2Z2, while the pipeline is down
RAW_THRESHOLD = 150  # day 2 misses 100 of them (from ESI), day 3 200 (from the raw file)


def cursor(pipeline: LocalPipeline) -> int:
    value = pipeline.aws.client("ssm").get_parameter(Name=pipeline.aws.cursor_parameter)["Parameter"]["Value"]
    return int(value) if value.isdigit() else -1


def drained(pipeline: LocalPipeline, head: int) -> bool:
    return cursor(pipeline) >= head and pipeline.aws.queue_depth(pipeline.aws.queue_url) == 0


@pytest.fixture
def started():
    """Pipelines to stop whatever happens: a failed test must not leave one running."""
    pipelines: list[LocalPipeline] = []
    yield pipelines
    for pipeline in pipelines:
        pipeline.stop()


def test_reconciliation_proves_every_killmail_after_restarts_gaps_and_dlq(
    database_url, restore_environ, tmp_path, capsys, monkeypatch, started
):
    rng = random.Random(13)
    docs = corpus.on_days(corpus.renumber(corpus.sample(), COUNT, first_id=800_000_000), DAYS)
    inline = {doc["killmail_id"]: rng.random() < 0.5 for doc in docs}
    # invalid at ESI: some metadata-only killmails, none on the first day (so it ends complete)
    invalid = {
        doc["killmail_id"]
        for doc in docs[COUNT // len(DAYS) :]
        if not inline[doc["killmail_id"]] and rng.random() < 0.03
    }
    good = [doc for doc in docs if doc["killmail_id"] not in invalid]
    day_of = {doc["killmail_id"]: DAYS[n * len(DAYS) // COUNT] for n, doc in enumerate(docs)}

    with R2Z2Server(sequence_lag=0, history_delay=timedelta(0)) as r2z2, EsiServer() as esi:

        def publish(batch: list[dict]) -> None:
            for doc in batch:
                body, killmail_hash = corpus.split_hash(doc)
                kid = doc["killmail_id"]
                if kid in invalid:  # zKillboard has a hash ESI refuses, and no body
                    killmail_hash = corpus.fake_hash(kid, "wrong")
                else:
                    esi.add(body, killmail_hash)
                zkb = dict(corpus.zkb_for(doc), hash=killmail_hash)
                r2z2.publish(body, killmail_hash, zkb, include_esi=inline[kid], raw=kid not in invalid)

        settings = PipelineSettings(
            database_url=database_url,
            user_agent=UA,
            pacing_ms=5,
            budget_seconds=20,  # room for R2Z2's 6 s waits after a 404 and the gap's confirmation
            tick_interval=0,
            visibility_timeout=2,
            # batches of 10, as the fetcher took them before FetcherBatchSize: with a 2 s visibility a
            # batch of 100 on a busy machine can outlive it, and a bad message delivered twice is
            # dead-lettered twice (the DLQ count below is exact)
            batch_size=10,
            fetcher_workers=2,
            state_dir=tmp_path / "local",
            initial_cursor="0",
            extra_env={"R2Z2_URL": r2z2.url, "ESI_URL": esi.url},
        )
        # 1. a first run, stopped once it has read the first 900, while its queue still holds work
        first = LocalPipeline(settings, RunStats())
        started.append(first)
        first.start()
        assert first.resumed is None
        publisher = threading.Thread(target=publish, args=(docs[:900],))
        publisher.start()
        assert first.wait_until(lambda: cursor(first) >= 700, timeout=120)
        esi.latency = 1.0  # ESI slows down near the stop, so the fetchers still hold work then
        assert first.wait_until(lambda: cursor(first) >= 900, timeout=120)
        publisher.join()
        first.stop()
        esi.latency = 0.0
        saved = RunState(tmp_path / "local").load(first.feed())
        assert saved is not None and saved.cursor == "900"
        held_at_stop = len(saved.queue)
        assert held_at_stop > 0, "the queue was empty at the stop: nothing to carry over was tested"

        # 2. while it is down: 300 more, expired before anyone reads them; then the rest
        publish(docs[900:1200])
        r2z2.expire(r2z2.head)
        publish(docs[1200:])

        # 3. a second run resumes at the saved cursor with the saved messages, skips the gap
        second = LocalPipeline(settings, RunStats())
        started.append(second)
        second.start()
        assert second.resumed is not None and second.resumed.cursor == saved.cursor
        assert second.wait_until(lambda: drained(second, r2z2.head) and drained(second, r2z2.head), timeout=300)
        time.sleep(1)
        second.stop()
        dead_lettered = RunState(tmp_path / "local").load(second.feed())
        assert dead_lettered is not None

        conn = connect(database_url)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT killmail_id FROM killmails")
                stored = {row[0] for row in cur.fetchall()}
            expired_good = {docs[n]["killmail_id"] for n in EXPIRED} - invalid
            assert {doc["killmail_id"] for doc in good} - stored == expired_good  # the gap, nothing else
            live_invalid = invalid - {docs[n]["killmail_id"] for n in EXPIRED}
            assert len(dead_lettered.dlq) == len(live_invalid)  # in the DLQ, kept across the stop

            # 4. killstream reconcile, with no queue: the few from ESI here, the many from the raw file
            for name, value in {
                "HISTORY_URL": r2z2.history_url,
                "ESI_URL": esi.url,
                "USER_AGENT": UA,
                "RECONCILE_RAW_THRESHOLD": str(RAW_THRESHOLD),
                "HISTORY_PACING_MS": "0",
                "KILLSTREAM_LOCAL_DIR": str(tmp_path / "cli"),
            }.items():
                monkeypatch.setenv(name, value)
            for name in ("QUEUE_URL", "DLQ_URL", "AWS_ENDPOINT_URL"):  # the stopped pipeline's, gone with it
                monkeypatch.delenv(name, raising=False)
            hits_before, requests_before = esi.total_hits, len(r2z2.requests)
            args = ["reconcile", "--from", f"{DAYS[0]}", "--to", f"{DAYS[-1]}", "--database-url", database_url]
            status = main(args)
            first_output = capsys.readouterr().out
            esi_calls = esi.total_hits - hits_before
            history_requests = [r.path for r in r2z2.requests[requests_before:]]
            assert status == 1  # days with invalid killmails are incomplete

            # every killmail history lists and ESI serves is stored, once, equal to its source
            assert count_rows(conn, "killmails") == len(good)
            assert count_rows(conn, "attackers") == sum(len(doc["attackers"]) for doc in good)
            items = sum(len(parse_killmail(corpus.split_hash(doc)[0]).items) for doc in good)
            assert count_rows(conn, "items") == items
            for doc in good:
                body, killmail_hash = corpus.split_hash(doc)
                recovered = doc["killmail_id"] in expired_good
                assert_stored_as(conn, body, None if recovered else corpus.zkb_for(doc), killmail_hash=killmail_hash)
                if recovered:
                    assert_stored_as(conn, body, {}, source="history")  # no zkb: history has none

            # each day complete, or incomplete with exactly its invalid ids, each with ESI's reason
            with conn.cursor() as cur:
                cur.execute("SELECT day, status, expected, stored, still_missing, method FROM reconciliation")
                days = {row[0]: row[1:] for row in cur.fetchall()}
                cur.execute("SELECT day, killmail_id, reason, detail FROM reconciliation_missing")
                missing = cur.fetchall()
            assert set(days) == set(DAYS) and days[DAYS[0]][0] == "complete"
            for day in DAYS:
                ids = {kid for kid in invalid if day_of[kid] == day}
                status_, expected, stored_count, still, _ = days[day]
                assert expected == COUNT // len(DAYS) and stored_count == expected - len(ids)
                assert (status_, still) == (("incomplete", len(ids)) if ids else ("complete", 0))
                assert {kid for d, kid, _, _ in missing if d == day} == ids
            assert {reason for _, _, reason, _ in missing} == {"esi_invalid_killmail"}
            assert all("422" in detail for *_, detail in missing)
            methods = {day: days[day][4] for day in DAYS}
            assert methods[DAYS[1]] == "esi" and methods[DAYS[2]].startswith("raw")
            assert esi_calls < 120  # day 2's hundred, and at most day 3's invalid ones
        finally:
            conn.close()

        # 5. a second reconcile downloads nothing: one request (totals.json), no ESI call
        hits_before, requests_before = esi.total_hits, len(r2z2.requests)
        assert main(args) == 1
        second_output = capsys.readouterr().out
        assert [r.path for r in r2z2.requests[requests_before:]] == ["/history/totals.json"]
        assert esi.total_hits == hits_before

    print(
        f"\ne2e: published={COUNT} days={len(DAYS)} invalid={len(invalid)} expired={len(EXPIRED)} "
        f"queued_at_stop={held_at_stop} dlq={len(dead_lettered.dlq)} "
        f"reconcile: history_requests={len(history_requests)} "
        f"({', '.join(sorted({p.rsplit('/', 2)[-2] for p in history_requests}))}) esi_calls={esi_calls}; "
        f"second reconcile: 1 request, 0 ESI calls\n{first_output}\n{second_output}"
    )
