"""The backfill against a local EVE Ref (and the local R2Z2's history) and a real PostgreSQL: a
range of days stored exactly as the archives hold them, a re-run that downloads nothing, a run
killed mid-day that finishes on the next with nothing doubled, every bad archive an error for its
killmail or day alone, and zkb filled in by a later live package."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from killstream.backfill.archives import EverefArchive
from killstream.backfill.days import Backfill, DayStatus
from killstream.config import BackfillConfig
from killstream.killmail import parse_killmail, parse_zkb
from killstream.reconcile.store import ReconciliationStore
from killstream.storage.connection import Database
from killstream.storage.writer import KillmailRecord, KillmailStore, Outcome
from killstream_workstation import corpus
from killstream_workstation.simulators import everef as faults
from killstream_workstation.simulators.everef import EverefServer
from killstream_workstation.simulators.r2z2 import R2Z2Server
from tests.support.stored import assert_stored_as, assert_zkb, count_rows

UA = "killstream-tests/1.0 (ci@example.com)"
DAYS = [date(2026, 11, 1) + timedelta(days=n) for n in range(3)]
NULL_ZKB = dict.fromkeys(("locationID", "fittedValue", "totalValue", "points", "npc", "solo", "labels"))


def documents(count: int, days: list[date], first_id: int = 400_000_000) -> list[dict]:
    return corpus.on_days(corpus.renumber(corpus.sample(), count, first_id=first_id), days)


def item_count(items: list[dict]) -> int:
    return sum(1 + item_count(item.get("items") or []) for item in items)


@pytest.fixture
def everef():
    with EverefServer(compresslevel=1, slow_seconds=0.5) as server:
        yield server


def backfill(url: str, database_url: str, source: str = "everef", **kwargs) -> Backfill:
    env = {"EVEREF_URL": url, "HISTORY_URL": url, "USER_AGENT": UA, "DATABASE_URL": database_url}
    made = Backfill.from_config(BackfillConfig.from_env(env), source, parallel=kwargs.pop("parallel", 2))
    for key, value in kwargs.items():
        setattr(made, key, value)
    return made


def run(url: str, database_url: str, days: list[date], source: str = "everef", **kwargs):
    made = backfill(url, database_url, source, **kwargs)
    try:
        return made.run(days)
    finally:
        made.close()


def day_rows(conn, source: str = "everef") -> dict[date, tuple]:
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT day, status, expected, stored, recovered, still_missing, error FROM reconciliation "
            "WHERE source = %s ORDER BY day",
            (source,),
        )
        return {row[0]: row[1:] for row in cur.fetchall()}


def missing_reasons(conn, day: date, source: str = "everef") -> dict[int, str]:
    return {row.killmail_id: row.reason for row in ReconciliationStore(conn).missing(source, day)}


def test_a_range_of_days_is_stored_exactly_as_the_archives_hold_it(everef, database_url, conn):
    docs = documents(90, DAYS)
    everef.add_all(docs)
    report = run(everef.url, database_url, DAYS)
    assert report.summary()["status"] == {f"{day}": "complete" for day in DAYS}
    assert report.summary()["killmails_inserted"] == 90 and report.summary()["killmail_errors"] == 0
    for doc in docs:
        body, killmail_hash = corpus.split_hash(doc)
        assert_stored_as(conn, body, NULL_ZKB, killmail_hash=killmail_hash, source="everef")
    assert count_rows(conn, "killmails") == 90
    assert count_rows(conn, "attackers") == sum(len(doc["attackers"]) for doc in docs)
    rows = day_rows(conn)
    assert {day: row[:5] for day, row in rows.items()} == dict.fromkeys(DAYS, ("complete", 30, 30, 30, 0))
    assert all(row[5] is None for row in rows.values())
    # one totals.json and one archive per day
    assert sorted(request.path for request in everef.requests) == sorted(
        ["/killmails/totals.json"] + [f"/killmails/{day:%Y}/killmails-{day}.tar.bz2" for day in DAYS]
    )
    assert {request.headers["User-Agent"] for request in everef.requests} == {UA}
    with conn, conn.cursor() as cur:  # history is not news: no event waits for the bus
        cur.execute("SELECT count(*) FROM killmails WHERE published_version IS NULL")
        assert cur.fetchone() == (0,)


def test_a_second_run_downloads_nothing_and_changes_nothing(everef, database_url, conn):
    everef.add_all(documents(60, DAYS))
    run(everef.url, database_url, DAYS)
    downloads = len(everef.archive_requests())
    again = run(everef.url, database_url, DAYS)
    assert len(everef.archive_requests()) == downloads  # complete days: totals.json only
    summary = again.summary()
    assert summary["days_skipped"] == 3 and summary["downloads"] == 0 and summary["killmails_inserted"] == 0
    assert summary["requests"] == 1
    assert count_rows(conn, "killmails") == 60
    assert {row[0] for row in day_rows(conn).values()} == {"complete"}


class Killed(BaseException):
    """What a SIGKILL is to the code in the middle of a day: nothing after it runs."""


def test_a_run_killed_mid_day_finishes_on_the_next_with_nothing_doubled(everef, database_url, conn):
    docs = documents(120, DAYS[:1])
    everef.add_all(docs)
    made = backfill(everef.url, database_url, parallel=1, batch_size=25)
    parsed = 0

    def kill_after_two_batches(killmails: int) -> None:
        nonlocal parsed
        parsed += killmails
        if parsed > 50:
            raise Killed

    with pytest.raises(Killed):
        made.run(DAYS[:1], on_progress=kill_after_two_batches)
    made.close()
    partly = count_rows(conn, "killmails")
    assert 0 < partly < 120 and day_rows(conn) == {}  # batches committed, the day not recorded
    report = run(everef.url, database_url, DAYS[:1], batch_size=25)
    (result,) = report.days
    assert result.status is DayStatus.COMPLETE and result.already_stored == partly and result.inserted == 120 - partly
    assert count_rows(conn, "killmails") == 120
    assert count_rows(conn, "attackers") == sum(len(doc["attackers"]) for doc in docs)
    assert count_rows(conn, "items") == sum(item_count(doc["victim"].get("items") or []) for doc in docs)
    for doc in docs:
        body, killmail_hash = corpus.split_hash(doc)
        assert_stored_as(conn, body, killmail_hash=killmail_hash, source="everef")


@pytest.mark.parametrize(
    "fault, status, reasons",
    [
        (faults.NOT_JSON, "incomplete", {"not_json"}),
        (faults.INVALID, "incomplete", {"validation_error"}),
        (faults.MALFORMED_HASH, "incomplete", {"malformed_hash"}),
        (faults.UNEXPECTED_MEMBER, "complete", set()),  # noted, yet every killmail is stored
        (faults.TRUNCATED, "error", set()),
        (faults.MISSING, "error", set()),
        (faults.OVERCOUNTED, "incomplete", set()),
        (faults.SLOW, "complete", set()),
        (faults.CUT_AT_END, "error", set()),  # every member whole, yet the file is cut: an error
        (faults.TWO_STREAMS, "complete", set()),
    ],
)
def test_a_bad_archive_is_an_error_for_its_killmail_or_day_and_the_run_goes_on(
    everef, database_url, conn, fault, status, reasons
):
    docs = documents(90, DAYS)
    everef.add_all(docs)
    bad = DAYS[1]
    everef.fault(bad, fault)
    report = run(everef.url, database_url, DAYS)
    assert report.summary()["status"] == {f"{DAYS[0]}": "complete", f"{bad}": status, f"{DAYS[2]}": "complete"}
    rows = day_rows(conn)
    assert rows[bad][0] == status
    assert set(missing_reasons(conn, bad).values()) == reasons
    (result,) = [r for r in report.days if r.day == bad]
    if reasons:  # one killmail alone is lost, named with its reason; the rest of the day is stored
        assert result.stored == 29 and rows[bad][4] == 1
        (lost,) = missing_reasons(conn, bad)
        with conn, conn.cursor() as cur:
            cur.execute("SELECT error_type, source FROM killmail_failures WHERE killmail_id = %s", (lost,))
            assert cur.fetchone() == (next(iter(reasons)), "everef")
    if fault == faults.UNEXPECTED_MEMBER:
        assert result.stored == 30 and "naming no killmail" in rows[bad][5]
    if fault == faults.CUT_AT_END:
        assert "truncated: the bz2 stream ends before its end marker" in rows[bad][5] and result.stored == 30
    if fault == faults.TRUNCATED:
        assert "truncated" in rows[bad][5] or "cut off" in rows[bad][5] or "not a readable" in rows[bad][5]
        assert result.stored < 30
    if fault == faults.MISSING:
        assert "404" in rows[bad][5] and result.stored == 0
    if fault == faults.OVERCOUNTED:
        assert result.stored == 30 and "counts 35" in rows[bad][5]
    if status != "complete":  # the next run downloads that day again (if short), and only that day
        if fault != faults.OVERCOUNTED:  # a day still short is asked for again on every run
            everef.clear_faults()
        before = len(everef.archive_requests())
        again = run(everef.url, database_url, DAYS)
        # downloaded again unless its stored count already says complete (a cut-off end marker)
        assert len(everef.archive_requests()) == before + (
            0 if result.stored >= 30 and fault != faults.OVERCOUNTED else 1
        )
        assert again.summary()["status"][f"{bad}"] == ("incomplete" if fault == faults.OVERCOUNTED else "complete")
    assert count_rows(conn, "killmails") <= 90


def test_backfilled_killmails_get_zkb_from_a_later_live_package_and_never_replace_it(everef, database_url, conn):
    docs = documents(40, DAYS[:1])
    everef.add_all(docs)
    live_first, later = docs[:10], docs[10:20]
    store = KillmailStore(conn)

    def live(doc: dict) -> KillmailRecord:
        body, killmail_hash = corpus.split_hash(doc)
        return KillmailRecord(parse_killmail(body), killmail_hash, parse_zkb(corpus.zkb_for(doc)), "r2z2", 7)

    assert store.write([live(doc) for doc in live_first]) == [Outcome.INSERTED] * 10
    report = run(everef.url, database_url, DAYS[:1])
    (result,) = report.days
    assert (result.already_stored, result.inserted) == (10, 30)
    for doc in live_first:  # their zkb untouched, their source the live one
        assert_zkb(conn, doc["killmail_id"], corpus.zkb_for(doc))
    for doc in later:
        assert_zkb(conn, doc["killmail_id"], NULL_ZKB)
    assert store.write([live(doc) for doc in later]) == [Outcome.ZKB_UPDATED] * 10
    for doc in later:
        assert_zkb(conn, doc["killmail_id"], corpus.zkb_for(doc))
    with conn, conn.cursor() as cur:
        cur.execute("SELECT source, count(*) FROM killmails GROUP BY source ORDER BY source")
        assert cur.fetchall() == [("everef", 30), ("r2z2", 10)]


def test_a_day_of_zkillboards_raw_files_is_stored_with_source_zkillboard(database_url, conn):
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=3), today - timedelta(days=2)]
    docs = documents(50, days)
    with R2Z2Server(history_delay=timedelta(0)) as r2z2:
        for doc in docs:
            body, killmail_hash = corpus.split_hash(doc)
            r2z2.history.add(body, killmail_hash)
        r2z2.history.fault(days[1], "raw_missing")
        report = run(r2z2.history_url, database_url, days, source="zkillboard")
        assert report.summary()["status"] == {f"{days[0]}": "complete", f"{days[1]}": "error"}
        for doc in docs[:25]:
            body, killmail_hash = corpus.split_hash(doc)
            assert_stored_as(conn, body, NULL_ZKB, killmail_hash=killmail_hash, source="zkillboard")
        rows = day_rows(conn, "zkillboard")
        assert rows[days[1]][0] == "error" and "no raw day file" in rows[days[1]][5]
        r2z2.history.clear_faults()
        again = run(r2z2.history_url, database_url, days, source="zkillboard")
        assert again.summary()["status"] == {f"{day}": "complete" for day in days}
        assert again.summary()["days_skipped"] == 1
    assert count_rows(conn, "killmails") == 50


def test_a_warm_backfill_reuses_its_clients_and_connections_across_runs(everef, database_url):
    """As a warm Lambda runs it, a day per invocation: one client and one connection, not one more per run."""
    everef.add_all(documents(40, DAYS[:2]))
    config = BackfillConfig.from_env({"EVEREF_URL": everef.url, "USER_AGENT": UA, "DATABASE_URL": database_url})
    made: list[Database] = []

    def database() -> Database:
        made.append(Database(config.database))
        return made[-1]

    backfill = Backfill(lambda: EverefArchive.build(config.everef_url, config.user_agent), database, parallel=1)
    try:
        for day in DAYS[:2] * 2:
            (result,) = backfill.run([day]).days
            assert result.status is DayStatus.COMPLETE
    finally:
        backfill.close()
    assert len(made) == 1


def test_a_refusal_ends_the_run_and_the_days_after_it_are_not_started(everef, database_url, conn):
    days = [date(2026, 11, 1) + timedelta(days=n) for n in range(4)]
    everef.add_all(documents(40, days))
    everef.fault(days[1], faults.REFUSED)
    report = run(everef.url, database_url, days, parallel=1)
    assert report.summary()["status"] == {f"{days[0]}": "complete", f"{days[1]}": "error"}
    assert report.not_done == days[2:] and report.stopped_because == "source_refused"
    assert "EVE Ref refuses service: HTTP 403" in day_rows(conn)[days[1]][5]
    assert [r.path for r in everef.archive_requests()] == [
        f"/killmails/2026/killmails-{day}.tar.bz2" for day in days[:2]
    ]  # nothing asked after the 403
