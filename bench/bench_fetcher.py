"""The fetcher with ESI_PARALLELISM 1 vs 4 on metadata-only batches (every killmail fetched from
a local ESI that answers after 150 ms), through the real handler and PostgreSQL.

    .venv/bin/python bench/bench_fetcher.py [--batches 10]

Last line: fetcher: p1=<killmails/s> p4=<killmails/s> ratio=<p4/p1>"""

from __future__ import annotations

import argparse
import json
import os
import time

from support import fresh_database, use_real_corpus

from killstream.observability import logger
from killstream_workstation import corpus
from killstream_workstation.local.lambda_runtime import LambdaContext, load_handler_module, sqs_record
from killstream_workstation.simulators.esi import EsiServer

logger.setLevel("WARNING")


def batches(docs: list[dict], size: int = 10) -> list[dict]:
    events = []
    for start in range(0, len(docs), size):
        records = []
        for doc in docs[start : start + size]:
            body = {
                "killmail_id": doc["killmail_id"],
                "hash": doc["killmail_hash"],
                "zkb": corpus.zkb_for(doc),
                "source": "r2z2",
            }
            records.append(sqs_record(json.dumps(body), str(doc["killmail_id"])))
        events.append({"Records": records})
    return events


def run(parallelism: int, docs: list[dict], url: str, esi: EsiServer) -> float:
    os.environ.update(
        {
            "ESI_URL": esi.url,
            "ESI_PARALLELISM": str(parallelism),
            "DATABASE_URL": url,
            "DLQ_URL": "http://127.0.0.1:9/000000000000/unused",
            "USER_AGENT": "killstream-bench/0.1 (b@example.com)",
            "AWS_DEFAULT_REGION": "us-east-1",
            "POWERTOOLS_METRICS_DISABLED": "true",
        }
    )
    handler = load_handler_module("fetcher").handler
    started = time.perf_counter()
    for event in batches(docs):
        failures = handler(event, LambdaContext("bench-fetcher", 60))["batchItemFailures"]
        if failures:
            raise SystemExit(f"unexpected failures: {failures}")
    return len(docs) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=10)
    args = parser.parse_args()
    use_real_corpus()
    base = corpus.sample()
    count = args.batches * 10
    one = corpus.renumber(base, count, first_id=600_000_000)
    four = corpus.renumber(base, count, first_id=700_000_000)
    with EsiServer(latency=0.150) as esi, fresh_database("bench_fetcher") as url:
        esi.add_many(one + four)
        print(f"ESI_PARALLELISM=1: {count} metadata-only killmails…", flush=True)
        p1 = run(1, one, url, esi)
        print(f"ESI_PARALLELISM=4: {count} more…", flush=True)
        p4 = run(4, four, url, esi)
    print(
        f"{count} metadata-only killmails in batches of 10, ESI latency 150 ms: "
        f"ESI_PARALLELISM=1 {p1:.1f} killmails/s, ESI_PARALLELISM=4 {p4:.1f} killmails/s"
    )
    print(f"fetcher: p1={p1:.1f} p4={p4:.1f} ratio={p4 / p1:.2f}")


if __name__ == "__main__":
    main()
