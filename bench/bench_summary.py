"""The killmail_summary view on 20,000 killmails: the queries README shows, timed, with their plans.

    make bench ARGS=summary
    .venv/bin/python bench/bench_summary.py --count 50000

The killmails are the sample corpus re-numbered, their times spread over the 30 days before now;
the enricher names their ids from the local ESI first (its run is timed too). Uses $DATABASE_URL,
else a private PostgreSQL with default durability. Each query: median of --repeat runs after a
warm-up, and its plan's access paths. The last line is machine-readable:
    summary: killmails=<n> recent_ms=<ms> region_ms=<ms> alliance_week_ms=<ms> top_day_ms=<ms> enrich_s=<s>"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import time
from datetime import UTC, datetime, timedelta

from support import create_database, postgres_server, use_real_corpus

from killstream.config import DatabaseConfig
from killstream.enrich.enricher import Enricher
from killstream.esi.universe import UniverseClient
from killstream.killmail import parse_killmail, parse_zkb
from killstream.storage.connection import Database, connect
from killstream.storage.writer import KillmailRecord, KillmailStore
from killstream_workstation import corpus
from killstream_workstation.simulators.esi import EsiServer

# The queries README shows ("Querying by name"), with the value each one filters on.
QUERIES = {
    "recent": (
        "recent kills",
        "SELECT * FROM killmail_summary ORDER BY killmail_time DESC LIMIT 50",
    ),
    "region": (
        "recent kills in a region",
        "SELECT * FROM killmail_summary WHERE region_id = %(region)s ORDER BY killmail_time DESC LIMIT 50",
    ),
    "alliance_week": (
        "an alliance's losses this week",
        """SELECT * FROM killmail_summary
           WHERE victim_alliance_id = %(alliance)s AND killmail_time > now() - interval '7 days'
           ORDER BY killmail_time DESC""",
    ),
    "top_day": (
        "the most expensive kills of the day",
        """SELECT * FROM killmail_summary WHERE killmail_time > now() - interval '1 day'
           ORDER BY zkb_total_value DESC NULLS LAST LIMIT 10""",
    ),
}


def build_records(count: int) -> list[KillmailRecord]:
    docs = corpus.renumber(corpus.sample(), count)
    now = datetime.now(UTC)
    step = timedelta(days=30) / count
    records = []
    for n, doc in enumerate(docs):
        doc["killmail_time"] = (now - step * n).strftime("%Y-%m-%dT%H:%M:%SZ")
        esi, killmail_hash = corpus.split_hash(doc)
        records.append(KillmailRecord(parse_killmail(esi), killmail_hash, parse_zkb(corpus.zkb_for(doc)), "bench"))
    return records


def enrich(url: str, docs: list[dict]) -> tuple[float, dict]:
    with EsiServer() as esi:
        esi.add_many(docs)
        enricher = Enricher(
            esi=UniverseClient(esi.url, "killstream-bench/0.1 (bench)"),
            database=Database(DatabaseConfig(url, None, None, None)),
            budget=float("inf"),
        )
        started = time.perf_counter()
        report = enricher.run()
        elapsed = time.perf_counter() - started
        enricher.database.close()
        return elapsed, {"killmails": report.killmails, "named": report.named, "calls": dict(esi.route_hits)}


def access_paths(cur, sql: str, params: dict) -> list[str]:
    cur.execute("EXPLAIN " + sql, params)
    paths = []
    for (line,) in cur.fetchall():
        match = re.search(
            r"((?:Parallel )?(?:Index Only Scan|Index Scan|Bitmap Index Scan|Seq Scan)(?: Backward)?)"
            r"(?: using (\w+))? on (\w+)",
            line,
        )
        if match:
            paths.append(f"{match[3]}: {match[1]}{' ' + match[2] if match[2] else ''}")
    return sorted(set(paths))


def time_query(cur, sql: str, params: dict, repeat: int) -> tuple[float, int]:
    cur.execute(sql, params)
    rows = len(cur.fetchall())
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        cur.execute(sql, params)
        cur.fetchall()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    use_real_corpus()
    records = build_records(args.count)
    with postgres_server() as admin_url:
        url = create_database(admin_url, "killstream_bench_summary")
        conn = connect(url)
        store = KillmailStore(conn)
        for n in range(0, len(records), 500):
            store.write(records[n : n + 500])
        enrich_s, enriched = enrich(url, corpus.sample())
        with conn, conn.cursor() as cur:
            cur.execute("ANALYZE")
            cur.execute(
                """SELECT region_id FROM killmail_summary WHERE region_id IS NOT NULL
                   GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"""
            )
            (region,) = cur.fetchone() or (None,)
            cur.execute(
                """SELECT victim_alliance_id FROM killmails WHERE victim_alliance_id IS NOT NULL
                   AND killmail_time > now() - interval '7 days' GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"""
            )
            (alliance,) = cur.fetchone() or (None,)
            params = {"region": region, "alliance": alliance}
            print(
                f"PostgreSQL {conn.server_version // 10000}, Python {platform.python_version()}; "
                f"{args.count:,} killmails; enricher: {enriched['named']:,} ids named over {enriched['killmails']:,} "
                f"killmails in {enrich_s:.1f} s, ESI calls {enriched['calls']}"
            )
            figures = {}
            for key, (what, sql) in QUERIES.items():
                median_ms, rows = time_query(cur, sql, params, args.repeat)
                figures[key] = median_ms
                print(f"{what}: {median_ms:.2f} ms median of {args.repeat} ({rows} rows)")
                print(f"    plan: {'; '.join(access_paths(cur, sql, params))}")
        conn.close()
    print(
        f"summary: killmails={args.count} "
        + " ".join(f"{key}_ms={value:.2f}" for key, value in figures.items())
        + f" enrich_s={enrich_s:.1f}"
    )


if __name__ == "__main__":
    main()
