"""The fetcher at the writer's speed: the real fetcher handler end to end on SQS events of the
template's BatchSize (packages with their ESI document inline), the batch writer alone at that
size, the same events re-delivered (every killmail already stored), the COPY bound at that size
and the per-row baseline; all in one run on one PostgreSQL with default durability (fsync and
synchronous_commit on), each path in a fresh database of its own, median of --runs.

    .venv/bin/python bench/bench_throughput.py [--count 5000] [--runs 3] [--batch-size N]
        [--peer PATH | $KILLSTREAM_PEER=PATH] [--profile FILE]

--peer names a checkout of eve-killmap/process-kills: its own `insert_kills_batch` (db.py, read
from the checkout at run time, never copied here) then writes the same killmails into its own
tables (schema.sql's kills and kill_attackers) at 10 and at the batch size, side by side.
--profile writes a cProfile of one end-to-end pass (pstats format) and prints its top entries.

Last line:
    fetcher: e2e=<km/s> writer=<km/s> ratio=<e2e/writer> batch=<N> redelivery=<km/s> per_row=<km/s>
        copy_bound=<km/s> writer_vs_bound=<n> [peer10=<km/s> peer=<km/s>]"""

from __future__ import annotations

import argparse
import ast
import cProfile
import io
import logging
import os
import pstats
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import psycopg2
from bench_store import bench_per_row, rows_of
from support import create_database, fetcher_environment, postgres_server, use_real_corpus

from killstream.killmail import parse_killmail, parse_zkb
from killstream.observability import logger
from killstream.package import Package
from killstream.storage.connection import connect
from killstream.storage.writer import (
    ATTACKER_COLUMNS,
    ITEM_COLUMNS,
    KILLMAIL_COLUMNS,
    KillmailRecord,
    KillmailStore,
    _attacker_lines,
    _copy_rows,
    _item_lines,
    killmail_row,
)
from killstream_workstation import corpus
from killstream_workstation.local.lambda_runtime import LambdaContext, load_handler_module, sqs_record

ROOT = Path(__file__).resolve().parents[1]
PEER_ENV = "KILLSTREAM_PEER"


def template_batch_size() -> int:
    """The default of the template's FetcherBatchSize parameter (10 before it existed)."""
    text = (ROOT / "template.yaml").read_text()
    match = re.search(r"^  FetcherBatchSize:\n(?:    .*\n)*?    Default: (\d+)", text, re.MULTILINE)
    return int(match.group(1)) if match else 10


def packages(docs: list[dict]) -> list[tuple[Package, str]]:
    """Each killmail as the poller queues an R2Z2 package with its ESI document inline."""
    out = []
    for n, doc in enumerate(docs):
        esi, killmail_hash = corpus.split_hash(doc)
        package = Package(
            killmail_id=doc["killmail_id"],
            hash=killmail_hash,
            zkb=corpus.zkb_for(doc),
            source="r2z2",
            esi=esi,
            sequence_id=90_000_000 + n,
            uploaded_at=1_767_225_600 + n,
        )
        out.append((package, package.to_body()))
    return out


def events(bodies: list[tuple[Package, str]], size: int) -> list[dict]:
    """SQS events as the event source hands them over: up to `size` records each."""
    out = []
    for start in range(0, len(bodies), size):
        records = []
        for package, body in bodies[start : start + size]:
            record = sqs_record(body, f"m-{package.killmail_id}")
            record["messageAttributes"] = {
                "killmail_id": {"stringValue": str(package.killmail_id), "dataType": "Number"}
            }
            records.append(record)
        out.append({"Records": records})
    return out


def records_of(bodies: list[tuple[Package, str]]) -> list[KillmailRecord]:
    out = []
    for package, _ in bodies:
        assert package.esi is not None
        out.append(KillmailRecord(parse_killmail(package.esi), package.hash, parse_zkb(package.zkb), package.source))
    return out


def quiet_logs() -> None:
    """The handler logs as in Lambda (INFO, Powertools JSON), into /dev/null instead of CloudWatch."""
    logger.setLevel(logging.INFO)
    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 — lives as long as the run


def run_handler(url: str, evts: list[dict], *, profile: cProfile.Profile | None = None) -> float:
    """Seconds for the real fetcher handler over `evts` on the database at `url`."""
    fetcher_environment(url, "http://127.0.0.1:9")  # ESI never asked: every package carries its document
    handler = load_handler_module("fetcher").handler
    quiet_logs()
    started = time.perf_counter()
    if profile:
        profile.enable()
    for event in evts:
        failures = handler(event, LambdaContext("bench-fetcher", 60))["batchItemFailures"]
        if failures:
            raise SystemExit(f"unexpected failures: {failures[:3]}")
    if profile:
        profile.disable()
    return time.perf_counter() - started


def run_writer(url: str, records: list[KillmailRecord], size: int) -> float:
    conn = connect(url)
    store = KillmailStore(conn)
    started = time.perf_counter()
    for n in range(0, len(records), size):
        store.write(records[n : n + size])
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def run_copy_bound(url: str, records: list[KillmailRecord], size: int) -> float:
    """The bound: plain COPY of every row into the full schema, one transaction per batch; no
    staging, no merge, no check for what is stored."""
    conn = connect(url)
    started = time.perf_counter()
    for n in range(0, len(records), size):
        batch = records[n : n + size]
        with conn, conn.cursor() as cur:
            cur.copy_expert(
                f"COPY killmails ({', '.join(KILLMAIL_COLUMNS)}) FROM STDIN", _copy_rows(map(killmail_row, batch))
            )
            cur.copy_expert(
                f"COPY attackers ({', '.join(ATTACKER_COLUMNS)}) FROM STDIN",
                io.StringIO("".join(line for r in batch for line in _attacker_lines(r.killmail))),
            )
            cur.copy_expert(
                f"COPY items ({', '.join(ITEM_COLUMNS)}) FROM STDIN",
                io.StringIO("".join(line for r in batch for line in _item_lines(r.killmail))),
            )
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


# --- the peer -------------------------------------------------------------------------------


def peer_writer(checkout: Path) -> Callable:
    """The peer's own `insert_kills_batch`, taken from its db.py at run time. Only that function
    (and db.py's get_cursor it calls) is compiled: the module's other imports (its config, with
    YAML and dotenv) are not needed to write and are not installed here."""
    from psycopg2.extras import execute_values

    tree = ast.parse((checkout / "db.py").read_text())
    wanted: list[ast.stmt] = [
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in ("get_cursor", "insert_kills_batch")
    ]
    if len(wanted) != 2:
        raise SystemExit(f"{checkout}/db.py: no insert_kills_batch/get_cursor found")
    import contextlib
    from typing import Any

    namespace: dict = {
        "execute_values": execute_values,
        "contextmanager": contextlib.contextmanager,
        "connection": psycopg2.extensions.connection,
        "Cursor": psycopg2.extensions.cursor,
        "Iterator": object,
        "Sequence": object,
        "Mapping": object,
        "Any": Any,
        "__name__": "peer_db",
    }
    exec(compile(ast.Module(body=wanted, type_ignores=[]), str(checkout / "db.py"), "exec"), namespace)
    return namespace["insert_kills_batch"]


def peer_schema(checkout: Path) -> str:
    """schema.sql's statements for the two tables insert_kills_batch writes (and their indexes)."""
    statements = [s.strip() for s in (checkout / "schema.sql").read_text().split(";")]
    keep = [
        s
        for s in statements
        if re.search(r"CREATE (TABLE|INDEX)[^;]*?\b(ON\s+)?(kills|kill_attackers)\b\s*\(", s, re.IGNORECASE)
    ]
    return ";\n".join(keep) + ";"


def peer_kills(bodies: list[tuple[Package, str]]) -> list[dict]:
    """The dict shape insert_kills_batch takes (what the peer's esi.parse_kill builds). Like
    parse_kill, killmails without a position are left out (the peer keeps only their id)."""
    kills = []
    for package, _ in bodies:
        esi = package.esi or {}
        if not esi["victim"].get("position"):
            continue
        victim, position = esi["victim"], esi["victim"]["position"]
        kills.append(
            {
                "killmail_id": package.killmail_id,
                "killmail_hash": package.hash,
                "killmail_time": esi["killmail_time"],
                "solar_system_id": esi["solar_system_id"],
                "position_x": position["x"],
                "position_y": position["y"],
                "position_z": position["z"],
                "victim_character_id": victim.get("character_id"),
                "victim_corporation_id": victim.get("corporation_id"),
                "victim_alliance_id": victim.get("alliance_id"),
                "victim_faction_id": victim.get("faction_id"),
                "victim_damage_taken": victim.get("damage_taken", 0),
                "victim_ship_type_id": victim["ship_type_id"],
                "war_id": esi.get("war_id"),
                "attackers": [
                    {
                        "character_id": a.get("character_id"),
                        "corporation_id": a.get("corporation_id"),
                        "alliance_id": a.get("alliance_id"),
                        "faction_id": a.get("faction_id"),
                        "ship_type_id": a.get("ship_type_id"),
                        "weapon_type_id": a.get("weapon_type_id"),
                        "damage_done": a.get("damage_done", 0),
                        "final_blow": a.get("final_blow", False),
                        "security_status": a.get("security_status", 0.0),
                    }
                    for a in esi.get("attackers", [])
                ],
            }
        )
    return kills


def run_peer(admin_url: str, name: str, checkout: Path, kills: list[dict], size: int) -> float:
    conn = psycopg2.connect(create_database(admin_url, name, schema=False))
    with conn, conn.cursor() as cur:
        cur.execute(peer_schema(checkout))
    insert_kills_batch = peer_writer(checkout)
    started = time.perf_counter()
    for n in range(0, len(kills), size):
        insert_kills_batch(conn, kills[n : n + size])
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


# --- the run --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=5000, help="killmails per path and run")
    parser.add_argument("--per-row-count", type=int, default=600)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the template's FetcherBatchSize")
    parser.add_argument("--peer", default=os.environ.get(PEER_ENV), help=f"process-kills checkout (or ${PEER_ENV})")
    parser.add_argument("--profile", default=None, help="write a cProfile of one end-to-end pass here")
    parser.add_argument("--only", default=None, help="just these paths, e.g. e2e,redelivery (a partial last line)")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    size = args.batch_size or template_batch_size()
    peer = Path(args.peer) if args.peer else None
    use_real_corpus()
    docs = corpus.renumber(corpus.sample(), args.count, first_id=500_000_000)
    bodies = packages(docs)
    evts = events(bodies, size)
    records = records_of(bodies)
    kills = peer_kills(bodies) if peer else []
    rows = rows_of(records)
    source = "real corpus" if corpus.load_real() else "generated corpus"
    print(
        f"data: {len(docs)} killmails from the {source} ({rows / len(docs):.1f} rows each), "
        f"events of {size}, median of {args.runs}"
    )
    seconds: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        seconds.setdefault(name, []).append(value)

    with postgres_server() as admin_url:

        def wanted(name: str) -> bool:
            return only is None or name in only

        for run in range(args.runs):
            if wanted("e2e") or wanted("redelivery"):
                url = create_database(admin_url, "bench_e2e")
                profile = cProfile.Profile() if args.profile and run == 0 else None
                add("e2e", run_handler(url, evts, profile=profile))
                if profile:
                    profile.dump_stats(args.profile)
                add("redelivery", run_handler(url, evts))
            if wanted("writer"):
                add("writer", run_writer(create_database(admin_url, "bench_writer"), records, size))
            if wanted("writer10"):
                add("writer10", run_writer(create_database(admin_url, "bench_writer10"), records, 10))
            if wanted("copy_bound"):
                add("copy_bound", run_copy_bound(create_database(admin_url, "bench_copy"), records, size))
            if wanted("per_row"):
                per_row_url = create_database(admin_url, "bench_per_row")
                add("per_row", bench_per_row(per_row_url, records[: args.per_row_count]))
            if peer and wanted("peer10"):
                add("peer10", run_peer(admin_url, "bench_peer10", peer, kills, 10))
            if peer and wanted("peer"):
                add("peer", run_peer(admin_url, "bench_peer", peer, kills, size))
    rate = {
        name: {"per_row": args.per_row_count, "peer10": len(kills), "peer": len(kills)}.get(name, len(docs))
        / statistics.median(values)
        for name, values in seconds.items()
    }
    peer_rows = (len(kills) + sum(len(k["attackers"]) for k in kills)) / max(1, len(kills))
    lines = [
        ("fetcher handler end to end, inline ESI", "e2e", rows / len(docs)),
        ("fetcher handler, every killmail re-delivered", "redelivery", None),
        (f"batch writer alone, {size} per transaction", "writer", rows / len(docs)),
        ("batch writer alone, 10 per transaction", "writer10", rows / len(docs)),
        (f"COPY into the full schema, {size} per transaction (the bound)", "copy_bound", rows / len(docs)),
        ("per-row baseline (one INSERT per row, one transaction per killmail)", "per_row", rows / len(docs)),
    ]
    if peer:
        lines += [
            ("peer process-kills insert_kills_batch, 10 per transaction", "peer10", peer_rows),
            (f"peer process-kills insert_kills_batch, {size} per transaction", "peer", peer_rows),
        ]
    if only is not None:
        print("fetcher (partial): " + " ".join(f"{name}={value:.0f}" for name, value in rate.items()))
        return
    for label, name, rows_each in lines:
        extra = f", {rate[name] * rows_each:,.0f} rows/s ({rows_each:.1f} rows each)" if rows_each else ""
        print(f"{label}: {rate[name]:,.0f} killmails/s{extra}")
    if args.profile:
        stats = pstats.Stats(args.profile, stream=(out := io.StringIO()))
        stats.sort_stats("cumulative").print_stats(30)
        print(out.getvalue())
    figure = (
        f"fetcher: e2e={rate['e2e']:.0f} writer={rate['writer']:.0f} ratio={rate['e2e'] / rate['writer']:.2f} "
        f"batch={size} redelivery={rate['redelivery']:.0f} per_row={rate['per_row']:.0f} "
        f"copy_bound={rate['copy_bound']:.0f} writer_vs_bound={rate['writer'] / rate['copy_bound']:.2f}"
    )
    if peer:
        figure += f" peer10={rate['peer10']:.0f} peer={rate['peer']:.0f}"
    print(figure)


if __name__ == "__main__":
    main()
