"""Storage benchmark: the batch writer against the original worker's one-statement-per-row path.

    make bench-store                      # 20,000 killmails, batches of 500
    make bench-store ARGS="--count 50000"

Uses $DATABASE_URL, else a private PostgreSQL with default durability (fsync on). The last line
is machine-readable:
    store: batch=<killmails/s> per_row=<killmails/s> ratio=<a/b> rows_per_s=<batch rows/s>"""

from __future__ import annotations

import argparse
import os
import platform
import time

from support import create_database, postgres_server, use_real_corpus

from killstream.killmail import parse_killmail, parse_zkb
from killstream.storage.connection import connect
from killstream.storage.writer import KILLMAIL_COLUMNS, KillmailRecord, KillmailStore, killmail_row
from killstream_workstation import corpus


def build_records(count: int) -> list[KillmailRecord]:
    docs = corpus.renumber(corpus.sample(), count)
    records = []
    for doc in docs:
        esi, killmail_hash = corpus.split_hash(doc)
        records.append(KillmailRecord(parse_killmail(esi), killmail_hash, parse_zkb(corpus.zkb_for(doc)), "bench"))
    return records


def rows_of(records) -> int:
    return sum(1 + len(r.killmail.attackers) + len(r.killmail.items) for r in records)


def bench_batch(url: str, records, batch_size: int) -> float:
    conn = connect(url)
    store = KillmailStore(conn)
    start = time.perf_counter()
    for n in range(0, len(records), batch_size):
        store.write(records[n : n + batch_size])
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def bench_per_row(url: str, records) -> float:
    """The original worker's way: one INSERT per row, one transaction per killmail."""
    conn = connect(url)
    km_sql = (
        f"INSERT INTO killmails ({', '.join(KILLMAIL_COLUMNS)}) VALUES ({', '.join(['%s'] * len(KILLMAIL_COLUMNS))}) "
        "ON CONFLICT (killmail_id) DO NOTHING"
    )
    attacker_sql = "INSERT INTO attackers VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    item_sql = (
        "INSERT INTO items (killmail_id, item_index, parent_index, item_type_id, flag, quantity_destroyed, "
        "quantity_dropped, singleton) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
    )
    start = time.perf_counter()
    for record in records:
        with conn, conn.cursor() as cur:
            row = list(killmail_row(record))
            row[KILLMAIL_COLUMNS.index("zkb_labels")] = list(record.zkb.labels or [])
            cur.execute(km_sql, row)
            km = record.killmail
            for n, a in enumerate(km.attackers):
                cur.execute(
                    attacker_sql,
                    (
                        km.killmail_id,
                        n,
                        a.character_id,
                        a.corporation_id,
                        a.alliance_id,
                        a.faction_id,
                        a.ship_type_id,
                        a.weapon_type_id,
                        a.damage_done,
                        a.final_blow,
                        a.security_status,
                    ),
                )
            for i in km.items:
                cur.execute(
                    item_sql,
                    (
                        km.killmail_id,
                        i.index,
                        i.parent_index,
                        i.item_type_id,
                        i.flag,
                        i.quantity_destroyed,
                        i.quantity_dropped,
                        i.singleton,
                    ),
                )
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20_000, help="killmails for the batch writer")
    parser.add_argument("--per-row-count", type=int, default=3_000, help="killmails for the per-row baseline")
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    use_real_corpus()

    with postgres_server() as admin_url:
        started = time.perf_counter()
        records = build_records(args.count)
        parse_s = time.perf_counter() - started
        source = "real corpus" if corpus.load_real() else "generated corpus"
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"PostgreSQL {'at DATABASE_URL' if os.environ.get('DATABASE_URL') else 'embedded, fsync on'}"
        )
        print(
            f"data: {len(records)} killmails from the {source}, {rows_of(records)} rows "
            f"(parsed and validated in {parse_s:.2f} s, {len(records) / parse_s:,.0f}/s)"
        )

        print(f"batch writer: storing {len(records):,} killmails, {args.batch_size} per transaction…", flush=True)
        batch_s = bench_batch(create_database(admin_url, "bench_batch"), records, args.batch_size)
        baseline = records[: args.per_row_count]
        print(f"per-row baseline: storing {len(baseline):,} killmails one row at a time…", flush=True)
        per_row_s = bench_per_row(create_database(admin_url, "bench_per_row"), baseline)

        batch_rate = len(records) / batch_s
        per_row_rate = len(baseline) / per_row_s
        rows_rate = rows_of(records) / batch_s
        print(
            f"batch writer (COPY + merge, {args.batch_size}/transaction): {len(records)} in {batch_s:.2f} s = "
            f"{batch_rate:,.0f} killmails/s, {rows_rate:,.0f} rows/s"
        )
        print(
            f"per-row baseline (one INSERT per row, one transaction per killmail): {len(baseline)} in "
            f"{per_row_s:.2f} s = {per_row_rate:,.0f} killmails/s, {rows_of(baseline) / per_row_s:,.0f} rows/s"
        )
        print(
            f"store: batch={batch_rate:.0f} per_row={per_row_rate:.0f} ratio={batch_rate / per_row_rate:.1f} "
            f"rows_per_s={rows_rate:.0f}"
        )


if __name__ == "__main__":
    main()
