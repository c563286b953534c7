"""The backfill's figures: one generated 15,000-killmail day (the sample killmails re-numbered onto
one UTC day) read from a local EVE Ref archive server (tar.bz2, compression level 9, as EVE Ref's)
into PostgreSQL with default durability — download, bz2, tar, JSON, validation and the COPY
batches all included — against the COPY bound measured in the same run: the same killmails,
already parsed, written through the same batch writer in the same batch size. And a whole day
skipped on a second run (complete by totals.json: no download).

    .venv/bin/python bench/bench_backfill.py [--killmails 15000]

The backfill runs in a fresh interpreter of its own, so its peak RSS is its own (imports
included), not the archive server's, which holds the day in this process. Last line:
backfill: killmails_per_s=<n> copy_bound=<n> ratio=<r> peak_mb=<peak RSS> ...
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

UA = "killstream-bench/0.1 (bench@example.com)"
DAY = date(2026, 11, 15)


def rss_mb() -> float:
    """This process's peak RSS (VmHWM; see bench_reconcile.py for why not ru_maxrss)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(everef_url: str, database_url: str, day: str) -> None:
    """One backfill of the day, as `killstream backfill` runs one."""
    os.environ.update(
        {
            "EVEREF_URL": everef_url,
            "DATABASE_URL": database_url,
            "USER_AGENT": UA,
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
    )
    from killstream.backfill.days import Backfill
    from killstream.config import BackfillConfig

    backfill = Backfill.from_config(BackfillConfig.from_env(), "everef", parallel=1)
    backfill.plan([date.fromisoformat(day)])  # connection, schema check and totals before the clock
    baseline = rss_mb()
    report = backfill.run([date.fromisoformat(day)])
    (result,) = report.days
    backfill.close()
    print(json.dumps(report.summary() | {"day_seconds": result.seconds, "baseline_mb": baseline, "peak_mb": rss_mb()}))


def run_child(everef_url: str, database_url: str, day: date) -> dict:
    command = [sys.executable, __file__, "--child", everef_url, database_url, str(day)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"the backfill failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    from support import create_database, postgres_server, use_real_corpus

    from killstream.backfill.archives import NO_ZKB
    from killstream.backfill.days import BATCH
    from killstream.killmail import parse_killmail
    from killstream.storage.connection import connect
    from killstream.storage.writer import KillmailRecord, KillmailStore
    from killstream_workstation import corpus
    from killstream_workstation.simulators.everef import EverefServer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--killmails", type=int, default=15_000, help="killmails in the day (default 15,000)")
    args = parser.parse_args()
    use_real_corpus()
    docs = corpus.on_days(corpus.renumber(corpus.sample(), args.killmails, first_id=500_000_000), [DAY])

    with postgres_server() as admin, EverefServer() as everef:
        everef.add_all(docs)
        started = time.monotonic()
        archive_mb = len(everef.archive(DAY)) / 1e6
        print(
            f"a {args.killmails:,}-killmail day: {archive_mb:.1f} MB tar.bz2 "
            f"(built in {time.monotonic() - started:.0f} s)"
        )

        # the COPY bound: the same killmails, parsed beforehand, through the same writer and batch size
        records = []
        for doc in docs:
            body, killmail_hash = corpus.split_hash(doc)
            records.append(KillmailRecord(parse_killmail(body), killmail_hash, NO_ZKB, "everef"))
        conn = connect(create_database(admin, "bench_backfill_copy"))
        try:
            started = time.monotonic()
            for start in range(0, len(records), BATCH):
                KillmailStore(conn).write(records[start : start + BATCH])
            copy_seconds = time.monotonic() - started
        finally:
            conn.close()
        del records
        copy_bound = args.killmails / copy_seconds
        print(f"COPY bound: {copy_seconds:.1f} s, {copy_bound:,.0f} killmails/s (parsed beforehand, {BATCH} a batch)")

        url = create_database(admin, "bench_backfill")
        first = run_child(everef.url, url, DAY)
        assert first["status"] == {f"{DAY}": "complete"} and first["killmails_inserted"] == args.killmails, first
        rate = args.killmails / first["day_seconds"]
        print(
            f"backfill of the day: {first['day_seconds']:.1f} s, {rate:,.0f} killmails/s; RSS "
            f"{first['baseline_mb']:.0f} MB after imports, peak {first['peak_mb']:.0f} MB"
        )
        conn = connect(url)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(
                    "SELECT sum(pg_total_relation_size(t::regclass)) "
                    "FROM unnest(ARRAY['killmails', 'attackers', 'items']) t"
                )
                row = cur.fetchone()
                stored_bytes = int(row[0]) if row else 0
        finally:
            conn.close()
        per_killmail_kb = stored_bytes / args.killmails / 1024
        print(
            f"stored: {stored_bytes / 1e6:.0f} MB for the day's killmails, attackers and items (indexes included), "
            f"{per_killmail_kb:.1f} KB a killmail"
        )
        requests_before = len(everef.archive_requests())
        again = run_child(everef.url, url, DAY)
        assert again["days_skipped"] == 1 and len(everef.archive_requests()) == requests_before, again
        print(f"the same day again: skipped, no download ({again['requests']} request: totals.json)")
    print(
        f"backfill: killmails_per_s={rate:.0f} copy_bound={copy_bound:.0f} ratio={rate / copy_bound:.2f} "
        f"peak_mb={first['peak_mb']:.0f} day_seconds={first['day_seconds']:.1f} archive_mb={archive_mb:.1f} "
        f"killmails={args.killmails} stored_kb_per_killmail={per_killmail_kb:.1f}"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        everef_url, database_url, day = sys.argv[2:]
        child(everef_url, database_url, day)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        main()
