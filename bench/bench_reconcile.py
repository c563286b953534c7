"""The reconciler's figures: its peak memory recovering a whole 15,000-killmail day from the raw
day file (a 2026 day: tens of MB of JSON, streamed), and what a reconcile of 7 complete days
costs in requests and ESI calls, first (day lists never checked) and then every day after.

    .venv/bin/python bench/bench_reconcile.py [--killmails 15000]

The reconciler runs in a fresh interpreter of its own, so its peak RSS is its own (imports
included), not the local history server's, which holds the day in this process. Last line:
reconcile: raw_killmails=<n> raw_mb=<size> peak_mb=<peak RSS> baseline_mb=<after imports> ...
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

UA = "killstream-bench/0.1 (bench@example.com)"


def rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not getrusage's ru_maxrss: Linux keeps that across exec,
    so a child would report the parent's peak from before it forked."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(history_url: str, database_url: str, esi_url: str, days: list[str]) -> None:
    """One reconcile, the way the Lambda runs one (less the queue: the few would go to ESI)."""
    os.environ.update(
        {
            "HISTORY_URL": history_url,
            "DATABASE_URL": database_url,
            "ESI_URL": esi_url,
            "USER_AGENT": UA,
            "HISTORY_PACING_MS": "0",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
    )
    from killstream.config import ReconcilerConfig
    from killstream.reconcile.reconciler import Reconciler

    reconciler = Reconciler.from_config(ReconcilerConfig.from_env())
    baseline = rss_mb()
    started = time.monotonic()
    report = reconciler.run([date.fromisoformat(day) for day in days])
    seconds = time.monotonic() - started
    summary = report.summary()
    print(json.dumps(summary | {"baseline_mb": baseline, "peak_mb": rss_mb(), "seconds": seconds}))


def run_child(history_url: str, database_url: str, esi_url: str, days: list[date]) -> dict:
    command = [sys.executable, __file__, "--child", history_url, database_url, esi_url, *map(str, days)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"the reconciler failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    from support import create_database, postgres_server, use_real_corpus

    from killstream.killmail import parse_killmail, parse_zkb
    from killstream.storage.connection import connect
    from killstream.storage.writer import KillmailRecord, KillmailStore
    from killstream_workstation import corpus
    from killstream_workstation.simulators.esi import EsiServer
    from killstream_workstation.simulators.r2z2 import R2Z2Server

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--killmails", type=int, default=15_000, help="killmails in the raw day (default 15,000)")
    args = parser.parse_args()
    use_real_corpus()
    today = datetime.now(UTC).date()
    day = today - timedelta(days=10)
    week = [today - timedelta(days=n) for n in range(7, 0, -1)]
    sample = corpus.sample()

    with postgres_server() as admin, R2Z2Server(history_delay=timedelta(0)) as r2z2, EsiServer() as esi:
        # 1. a whole day missing: from the raw file, streamed
        big = corpus.on_days(corpus.renumber(sample, args.killmails, first_id=300_000_000), [day])
        for doc in big:
            body, killmail_hash = corpus.split_hash(doc)
            r2z2.history.add(body, killmail_hash)
        raw_mb = len(r2z2.history.respond(f"/history/raw/{day:%Y%m%d}.json").body) / 1e6
        raw = run_child(r2z2.history_url, create_database(admin, "bench_reconcile_raw"), esi.url, [day])
        assert raw["killmails_recovered"] == args.killmails and raw["days"] == {f"{day}": "complete"}, raw
        del big
        print(
            f"a {args.killmails:,}-killmail day missing, recovered from its raw file ({raw_mb:.1f} MB): "
            f"{raw['seconds']:.1f} s, reconciler RSS {raw['baseline_mb']:.0f} MB after imports, "
            f"peak {raw['peak_mb']:.0f} MB"
        )

        # 2. seven complete days (1,000 killmails each), checked for the first time, then again
        url = create_database(admin, "bench_reconcile_week")
        week_docs = corpus.on_days(corpus.renumber(sample, 7_000, first_id=310_000_000), week)
        conn = connect(url)
        try:
            records = []
            for doc in week_docs:
                body, killmail_hash = corpus.split_hash(doc)
                r2z2.history.add(body, killmail_hash)
                zkb = parse_zkb(corpus.zkb_for(doc))
                records.append(KillmailRecord(parse_killmail(body), killmail_hash, zkb, "r2z2", sequence_id=1))
            for start in range(0, len(records), 1000):
                KillmailStore(conn).write(records[start : start + 1000])
        finally:
            conn.close()
        costs = []
        for _ in range(2):
            before = len(r2z2.requests)
            summary = run_child(r2z2.history_url, url, esi.url, week)
            assert set(summary["days"].values()) == {"complete"}, summary
            paths = [request.path for request in r2z2.requests[before:]]
            costs.append((len(paths), summary["downloads"], esi.total_hits, summary["seconds"]))
        (first_requests, first_downloads, _, _), (then_requests, then_downloads, esi_calls, then_seconds) = costs
        print(
            f"7 complete days: first check {first_requests} requests ({first_downloads} day lists), then "
            f"{then_requests} request ({then_downloads} downloads, {then_seconds:.2f} s); {esi_calls} ESI calls"
        )
    print(
        f"reconcile: raw_killmails={args.killmails} raw_mb={raw_mb:.1f} peak_mb={raw['peak_mb']:.0f} "
        f"baseline_mb={raw['baseline_mb']:.0f} raw_seconds={raw['seconds']:.1f} week_first_requests={first_requests} "
        f"week_requests={then_requests} week_esi_calls={esi_calls}"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        history_url, database_url, esi_url, *days = sys.argv[2:]
        child(history_url, database_url, esi_url, days)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        main()
