"""`killstream backfill` as a user runs it: a range of days from a local EVE Ref into the database,
its progress and summary; a second run that downloads nothing; --dry-run; and every bad input one
line with its exit status, nothing started; and the real command killed mid-day (SIGKILL) and run
again, nothing doubled."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from killstream_workstation import corpus
from killstream_workstation.cli.main import main
from killstream_workstation.simulators.everef import TRUNCATED, EverefServer
from tests.support.stored import count_rows

UA = "killstream-tests/1.0 (ci@example.com)"
DAYS = [date(2026, 10, 1) + timedelta(days=n) for n in range(4)]


@pytest.fixture
def everef():
    with EverefServer(compresslevel=1) as server:
        server.add_all(corpus.on_days(corpus.renumber(corpus.sample(), 200, first_id=600_000_000), DAYS))
        yield server


def backfill(everef: EverefServer, database_url: str, *extra: str) -> int:
    return main(
        [
            "backfill",
            "--from",
            f"{DAYS[0]}",
            "--to",
            f"{DAYS[-1]}",
            "--everef-url",
            everef.url,
            "--database-url",
            database_url,
            "--user-agent",
            UA,
            *extra,
        ]
    )


def test_backfill_stores_the_range_shows_progress_and_a_second_run_downloads_nothing(
    everef, database_url, conn, capsys, restore_environ
):
    assert backfill(everef, database_url, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "would download 4 day(s)" in out and "about 200 killmail(s) not stored yet" in out
    assert count_rows(conn, "killmails") == 0 and everef.archive_requests() == []

    assert backfill(everef, database_url, "--parallel", "2") == 0
    captured = capsys.readouterr()
    assert "4/4 days" in captured.err and "killmails/s" not in captured.out  # the bar is on stderr
    assert "ETA" in captured.err
    last = captured.out.strip().splitlines()[-1]
    assert last.startswith("backfill: source=everef days=4 complete=4 skipped=0 failed=0 killmails_new=200")
    assert count_rows(conn, "killmails") == 200 and len(everef.archive_requests()) == 4

    assert backfill(everef, database_url) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "complete=4 skipped=4" in last and "downloads=0" in last and "killmails_new=0" in last
    assert len(everef.archive_requests()) == 4

    assert backfill(everef, database_url, "--dry-run") == 0
    assert "would download 0 day(s)" in capsys.readouterr().out


def test_a_day_that_cannot_be_read_is_named_and_the_exit_status_says_so(everef, database_url, capsys, restore_environ):
    everef.fault(DAYS[2], TRUNCATED)
    assert backfill(everef, database_url) == 1
    out = capsys.readouterr().out
    assert f"{DAYS[2]}  error" in out and f"  {DAYS[2]}: killmails-{DAYS[2]}.tar.bz2" in out
    assert "complete=3" in out.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "args, says",
    [
        (["--from", "2007-12-04"], "everef's archive begins on 2007-12-05"),
        (["--from", "2026-06-30", "--source", "zkillboard"], "use --source everef for earlier days"),
        (["--from", f"{datetime.now(UTC).date()}"], "the last complete UTC day is"),
        (["--from", "2026-10-05", "--to", "2026-10-01"], "is after --to"),
        (["--from", "2026-10-01", "--to", "2026-10-02", "--parallel", "9"], "--parallel 9: at most 8"),
        (["--from", "2026-10-01", "--to", "2026-10-02", "--everef-url", "ftp://x"], "EVEREF_URL: must be an http"),
        (["--from", "2026-10-01", "--to", "2026-10-02", "--user-agent", "curl/8"], "USER_AGENT"),
        (["--from", "yesterday"], "not a YYYY-MM-DD day"),
    ],
)
def test_bad_inputs_are_one_line_and_status_2(args, says, capsys, restore_environ, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("USER_AGENT", UA)
    try:
        status = main(["backfill", *args])
    except SystemExit as exit:  # argparse's own: a bad flag value
        status = exit.code
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err and "Traceback" not in err


def test_a_backfill_killed_mid_day_with_sigkill_finishes_on_the_next_run_with_nothing_doubled(
    database_url, conn, restore_environ
):
    """The real command in a process of its own, killed (SIGKILL) once some of the day's batches
    are committed and before the day is done; run again, it stores the rest, each killmail once."""
    day = date(2026, 10, 20)
    docs = corpus.on_days(corpus.renumber(corpus.sample(), 4_000, first_id=610_000_000), [day])
    with EverefServer(compresslevel=1) as everef:
        everef.add_all(docs)
        everef.archive(day)  # built before the clock starts
        argv = [
            str(Path(sys.executable).parent / "killstream"),
            "backfill",
            "--from",
            f"{day}",
            "--to",
            f"{day}",
            "--everef-url",
            everef.url,
            "--database-url",
            database_url,
            "--user-agent",
            UA,
        ]
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            stored = 0
            while stored == 0 and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
                stored = count_rows(conn, "killmails")
                conn.commit()
            process.send_signal(signal.SIGKILL)
        finally:
            process.wait(timeout=30)
        partly = count_rows(conn, "killmails")
        conn.commit()
        assert 0 < partly < 4_000, "killed too late to prove anything: make the day larger"
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        last = done.stdout.strip().splitlines()[-1]
        assert f"killmails_new={4_000 - partly} already_stored={partly}" in last
    assert count_rows(conn, "killmails") == 4_000
    assert count_rows(conn, "attackers") == sum(len(doc["attackers"]) for doc in docs)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT status, stored, expected FROM reconciliation WHERE source = 'everef' AND day = %s", (day,))
        assert cur.fetchone() == ("complete", 4_000, 4_000)
