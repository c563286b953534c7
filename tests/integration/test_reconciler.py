"""The reconciler against the local R2Z2's history, the local ESI and a real PostgreSQL: the cheap
path costs one request, the few come from ESI (or the queue), the many from the raw file, what
cannot be had is recorded with why, and a broken file is an error for its day alone."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import boto3
import pytest

from killstream.config import DatabaseConfig
from killstream.esi.killmails import KillmailClient
from killstream.fetcher.batch import Fetcher
from killstream.fetcher.messages import Message
from killstream.killmail import parse_killmail, parse_zkb
from killstream.poller.sink import SqsSink
from killstream.reconcile.history import HistoryClient
from killstream.reconcile.reconciler import Reconciler, Status
from killstream.reconcile.recovery import FailuresTableOnly, FetcherRecovery, QueueRecovery
from killstream.reconcile.store import ReconciliationStore
from killstream.storage.connection import Database
from killstream.storage.writer import KillmailRecord, KillmailStore
from killstream_workstation import corpus
from killstream_workstation.simulators.esi import EsiServer
from killstream_workstation.simulators.history import LIST_GARBAGE, MALFORMED_HASH, RAW_MISSING, RAW_TRUNCATED
from killstream_workstation.simulators.r2z2 import R2Z2Server
from tests.support.sqs import drain
from tests.support.stored import assert_stored_as, count_rows

UA = "killstream-tests/1.0 (ci@example.com)"
TODAY = datetime.now(UTC).date()
DAYS = [TODAY - timedelta(days=n) for n in (4, 3, 2)]


@pytest.fixture
def upstream():
    with R2Z2Server(sequence_lag=0, history_delay=timedelta(0)) as r2z2, EsiServer() as esi:
        yield r2z2, esi


def publish(r2z2: R2Z2Server, esi: EsiServer, docs: list[dict], *, invalid: frozenset[int] = frozenset()) -> None:
    """zKillboard has these killmails; ESI serves them, except the `invalid` ones."""
    for doc in docs:
        body, killmail_hash = corpus.split_hash(doc)
        raw = doc["killmail_id"] not in invalid
        r2z2.publish(body, killmail_hash, corpus.zkb_for(doc), raw=raw)
        if raw:
            esi.add(body, killmail_hash)


def store(conn, docs: list[dict]) -> None:
    """As the live feed stored them: with their zkb."""
    records = []
    for doc in docs:
        body, killmail_hash = corpus.split_hash(doc)
        records.append(
            KillmailRecord(parse_killmail(body), killmail_hash, parse_zkb(corpus.zkb_for(doc)), "r2z2", sequence_id=1)
        )
    KillmailStore(conn).write(records)


def reconciler(database_url: str, r2z2: R2Z2Server, esi: EsiServer, *, threshold: int = 1000, few=None) -> Reconciler:
    database = Database(DatabaseConfig(database_url, None, None, None))
    history = HistoryClient.build(r2z2.history_url, UA, pacing_seconds=0)
    if few is None:
        fetcher = Fetcher(
            esi=KillmailClient(esi.url, UA), database=database, dead_letters=FailuresTableOnly(), parallelism=4
        )
        few = FetcherRecovery(fetcher)
    return Reconciler(history, database, few, raw_threshold=threshold)


def history_requests(r2z2: R2Z2Server) -> list[str]:
    return [request.path for request in r2z2.requests if request.path.startswith("/history/")]


def rows(conn, table: str, day: date) -> list[dict]:
    with conn.cursor() as cur:
        cur.execute(f"SELECT * FROM {table} WHERE day = %s ORDER BY 1, 2", (day,))
        names = [column.name for column in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


@pytest.fixture
def docs():
    return corpus.on_days(corpus.renumber(corpus.sample(), 90, first_id=700_000_000), DAYS)


def test_complete_days_cost_one_request_once_their_lists_were_checked(upstream, database_url, conn, docs):
    r2z2, esi = upstream
    publish(r2z2, esi, docs)
    store(conn, docs)
    first = reconciler(database_url, r2z2, esi).run(DAYS)
    assert [check.status for check in first.checks] == [Status.COMPLETE] * 3
    assert history_requests(r2z2) == ["/history/totals.json"] + [f"/history/{day:%Y%m%d}.json" for day in DAYS]
    assert first.requests == 4
    r2z2.requests.clear()
    second = reconciler(database_url, r2z2, esi).run(DAYS)
    assert [check.status for check in second.checks] == [Status.COMPLETE] * 3
    assert history_requests(r2z2) == ["/history/totals.json"] and second.requests == 1
    assert all(check.downloaded == [] for check in second.checks)
    assert esi.total_hits == 0
    (record,) = rows(conn, "reconciliation", DAYS[0])
    assert (record["status"], record["expected"], record["listed"], record["stored"], record["still_missing"]) == (
        "complete",
        30,
        30,
        30,
        0,
    )


def test_a_stop_asked_for_ends_the_run_as_the_end_of_its_time_would(upstream, database_url, conn, docs):
    """Issue 10 made the local runner's Ctrl+C end a budget, not drop the remaining time to 0
    (a popped RedisQ package must still be read): the reconciler reads the stop itself."""
    r2z2, esi = upstream
    publish(r2z2, esi, docs)
    store(conn, docs)
    # the totals are read; then a stop is asked for
    report = reconciler(database_url, r2z2, esi).run(
        DAYS, time_left=lambda: 600.0, stop_requested=lambda: bool(history_requests(r2z2))
    )
    assert report.stopped_because == "remaining_time" and report.not_checked == DAYS
    assert history_requests(r2z2) == ["/history/totals.json"]


def test_a_few_missing_come_from_esi_as_history_rows_without_zkb(upstream, database_url, conn, docs):
    r2z2, esi = upstream
    publish(r2z2, esi, docs)
    lost = docs[5:12] + docs[40:43]
    store(conn, [doc for doc in docs if doc not in lost])
    report = reconciler(database_url, r2z2, esi).run(DAYS)
    assert [check.status for check in report.checks] == [Status.COMPLETE] * 3
    assert [(check.missing, check.recovered, check.method) for check in report.checks] == [
        (7, 7, "esi"),
        (3, 3, "esi"),
        (0, 0, None),
    ]
    assert esi.total_hits == len(lost)
    assert not any("/raw/" in path for path in history_requests(r2z2))
    for doc in lost:
        body, killmail_hash = corpus.split_hash(doc)
        assert_stored_as(conn, body, {}, killmail_hash=killmail_hash, source="history")  # zkb_* all NULL
    assert count_rows(conn, "killmails") == len(docs)


def test_many_missing_come_from_the_raw_file_without_esi(upstream, database_url, conn, docs):
    r2z2, esi = upstream
    publish(r2z2, esi, docs)
    store(conn, docs[30:])  # the whole first day is missing
    report = reconciler(database_url, r2z2, esi, threshold=20).run(DAYS)
    first = report.checks[0]
    assert (first.status, first.missing, first.recovered, first.method) == (Status.COMPLETE, 30, 30, "raw")
    assert first.downloaded == ["list", "raw"]
    assert esi.total_hits == 0
    for doc in docs[:30]:
        body, killmail_hash = corpus.split_hash(doc)
        assert_stored_as(conn, body, {}, killmail_hash=killmail_hash, source="history")


def test_what_esi_refuses_is_recorded_by_id_and_never_asked_for_again(upstream, database_url, conn, docs):
    r2z2, esi = upstream
    invalid = frozenset(doc["killmail_id"] for doc in docs[3:5])
    publish(r2z2, esi, docs, invalid=invalid)
    store(conn, docs[5:])
    first = reconciler(database_url, r2z2, esi).run(DAYS)
    assert first.checks[0].status is Status.INCOMPLETE and first.checks[0].recovered == 3
    missing = rows(conn, "reconciliation_missing", DAYS[0])
    assert {row["killmail_id"] for row in missing} == invalid
    assert {row["reason"] for row in missing} == {"esi_invalid_killmail"}
    assert all("422" in row["detail"] for row in missing)
    with conn.cursor() as cur:
        cur.execute("SELECT killmail_id, error_type FROM killmail_failures ORDER BY 1")
        assert cur.fetchall() == [(kid, "esi_invalid_killmail") for kid in sorted(invalid)]
    hits = esi.total_hits
    r2z2.requests.clear()
    second = reconciler(database_url, r2z2, esi).run(DAYS)
    assert second.checks[0].status is Status.INCOMPLETE and second.checks[0].incomplete_runs == 2
    assert second.days_still_incomplete == 1
    assert esi.total_hits == hits and history_requests(r2z2) == ["/history/totals.json"]
    assert {row["killmail_id"] for row in rows(conn, "reconciliation_missing", DAYS[0])} == invalid


def test_a_killmail_the_fetcher_dead_lettered_is_explained_without_asking_esi(upstream, database_url, conn, docs):
    r2z2, esi = upstream
    bad = docs[0]
    publish(r2z2, esi, docs, invalid=frozenset({bad["killmail_id"]}))
    store(conn, docs[1:])
    # the live feed's package for it went through the fetcher, which dead-lettered it
    database = Database(DatabaseConfig(database_url, None, None, None))
    fetcher = Fetcher(esi=KillmailClient(esi.url, UA), database=database, dead_letters=FailuresTableOnly())
    body = json.dumps({"killmail_id": bad["killmail_id"], "hash": bad["killmail_hash"], "zkb": {}, "source": "r2z2"})
    fetcher.process([Message("m-1", body)], time_left=30)
    assert esi.total_hits == 1
    report = reconciler(database_url, r2z2, esi).run(DAYS[:1])
    assert esi.total_hits == 1
    (row,) = rows(conn, "reconciliation_missing", DAYS[0])
    assert (row["killmail_id"], row["reason"]) == (bad["killmail_id"], "esi_invalid_killmail")
    assert "dead-lettered, from r2z2" in row["detail"]
    assert report.checks[0].status is Status.INCOMPLETE


def test_the_queue_path_puts_metadata_only_history_packages_and_the_next_run_confirms(
    upstream, database_url, conn, docs, queue_url
):
    r2z2, esi = upstream
    publish(r2z2, esi, docs)
    lost = docs[60:64]
    store(conn, [doc for doc in docs if doc not in lost])
    queue = QueueRecovery(SqsSink(boto3.client("sqs"), queue_url))
    first = reconciler(database_url, r2z2, esi, few=queue).run(DAYS)
    third = first.checks[2]
    assert (third.status, third.missing, third.enqueued, third.recovered, third.method) == (
        Status.RECOVERING,
        4,
        4,
        0,
        "queue",
    )
    assert {row["reason"] for row in rows(conn, "reconciliation_missing", DAYS[2])} == {"queued"}
    bodies = [body for body, _ in drain(queue_url)]
    assert sorted(body["killmail_id"] for body in bodies) == sorted(doc["killmail_id"] for doc in lost)
    assert all(body["source"] == "history" and body["zkb"] == {} and "esi" not in body for body in bodies)
    # the fetcher takes them off the queue as it takes any package
    database = Database(DatabaseConfig(database_url, None, None, None))
    fetcher = Fetcher(esi=KillmailClient(esi.url, UA), database=database, dead_letters=FailuresTableOnly())
    fetcher.process([Message(str(n), json.dumps(body)) for n, body in enumerate(bodies)], time_left=30)
    r2z2.requests.clear()
    second = reconciler(database_url, r2z2, esi, few=queue).run(DAYS)
    third = second.checks[2]
    assert (third.status, third.recovered, third.incomplete_runs) == (Status.COMPLETE, 4, 0)
    assert history_requests(r2z2) == ["/history/totals.json"]
    assert rows(conn, "reconciliation_missing", DAYS[2]) == []


def test_a_broken_day_is_an_error_for_that_day_and_the_others_go_on(upstream, database_url, conn, docs):
    r2z2, esi = upstream
    publish(r2z2, esi, docs)
    store(conn, docs[1:])
    r2z2.history.fault(DAYS[0], LIST_GARBAGE)
    report = reconciler(database_url, r2z2, esi).run(DAYS)
    assert [check.status for check in report.checks] == [Status.ERROR, Status.COMPLETE, Status.COMPLETE]
    assert "does not parse" in report.checks[0].errors[0] and report.history_errors == 1
    (record,) = rows(conn, "reconciliation", DAYS[0])
    assert record["status"] == "error" and "day list" in record["error"] and record["incomplete_runs"] == 1


def test_a_missing_or_truncated_raw_file_falls_back_to_esi_and_says_so(upstream, database_url, conn, docs):
    r2z2, esi = upstream
    publish(r2z2, esi, docs)
    store(conn, [doc for n, doc in enumerate(docs) if n % 30 >= 25])  # 25 of each day missing
    r2z2.history.fault(DAYS[0], RAW_MISSING)
    r2z2.history.fault(DAYS[1], RAW_TRUNCATED)
    report = reconciler(database_url, r2z2, esi, threshold=20).run(DAYS)
    assert [check.status for check in report.checks] == [Status.COMPLETE] * 3
    first, second, third = report.checks
    assert first.method == "esi" and "no raw day file (404)" in first.errors[0]
    assert second.method == "raw+esi" and "truncated" in second.errors[0]
    assert third.method == "raw" and third.errors == []
    assert 0 < esi.total_hits < 50  # day 1 wholly, day 2 the second half, day 3 not at all
    assert count_rows(conn, "killmails") == len(docs)
    assert report.history_errors == 2


def test_a_malformed_hash_and_unlisted_killmails_are_recorded_not_chased(upstream, database_url, conn, docs):
    r2z2, esi = upstream
    publish(r2z2, esi, docs)
    first_id = min(doc["killmail_id"] for doc in docs[:30])
    store(conn, [doc for doc in docs if doc["killmail_id"] != first_id])
    r2z2.history.fault(DAYS[0], MALFORMED_HASH)
    r2z2.history.unlisted[DAYS[1]] = 2
    report = reconciler(database_url, r2z2, esi).run(DAYS)
    first, second, _ = report.checks
    assert first.status is Status.INCOMPLETE and "malformed" in first.errors[0]
    (row,) = rows(conn, "reconciliation_missing", DAYS[0])
    assert (row["killmail_id"], row["reason"]) == (first_id, "malformed_hash")
    assert (second.status, second.expected, second.listed, second.unlisted) == (Status.COMPLETE, 32, 30, 2)
    r2z2.requests.clear()
    again = reconciler(database_url, r2z2, esi).run(DAYS)
    assert [check.status for check in again.checks] == [Status.INCOMPLETE, Status.COMPLETE, Status.COMPLETE]
    assert history_requests(r2z2) == ["/history/totals.json"] and esi.total_hits == 0


def test_a_day_not_in_totals_yet_and_a_refusal(upstream, database_url, conn, docs):
    r2z2, esi = upstream
    publish(r2z2, esi, docs)
    yesterday = TODAY - timedelta(days=1)
    report = reconciler(database_url, r2z2, esi).run([DAYS[0], yesterday])
    assert report.checks[1].status is Status.ERROR and "no count for this day" in report.checks[1].errors[0]
    r2z2.faults.script(403, when="/history/", times=None)
    refused = reconciler(database_url, r2z2, esi).run(DAYS)
    assert refused.stopped_because == "source_refused"
    assert all(check.status is Status.ERROR and "refuses" in check.errors[0] for check in refused.checks)
    assert len(history_requests(r2z2)) == 3  # totals, the first list, totals of the refused run: nothing more


def test_a_dry_run_writes_nothing_and_calls_no_esi(upstream, database_url, conn, docs):
    r2z2, esi = upstream
    publish(r2z2, esi, docs)
    store(conn, docs[2:])
    report = reconciler(database_url, r2z2, esi).run(DAYS, dry_run=True)
    assert report.checks[0].missing == 2 and report.checks[0].method == "esi"
    assert {row.reason for row in report.checks[0].missing_rows or []} == {"would_recover"}
    assert esi.total_hits == 0 and count_rows(conn, "reconciliation") == 0
    assert count_rows(conn, "killmails") == len(docs) - 2


def test_stored_counts_follow_utc_day_boundaries(conn, docs):
    day = DAYS[0]
    edge = [
        dict(docs[0], killmail_time=f"{day:%Y-%m-%d}T00:00:00Z"),
        dict(docs[1], killmail_time=f"{day:%Y-%m-%d}T23:59:59Z"),
        dict(docs[2], killmail_time=f"{day + timedelta(days=1):%Y-%m-%d}T00:00:00Z"),
    ]
    store(conn, edge)
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'Pacific/Auckland'")
    window = ReconciliationStore(conn).window("history", day - timedelta(days=1), day + timedelta(days=1))
    assert [(w.day, w.stored, w.previous) for w in window] == [
        (day - timedelta(days=1), 0, None),
        (day, 2, None),
        (day + timedelta(days=1), 1, None),
    ]
