"""Killmail events published per second: the fetcher's publication step (events/publisher.py) on
killmails just stored, a batch of 10 at a time as the fetcher publishes them — the query of the
batch's unpublished killmails with their names, the events built, PutEvents, the published mark —
against PostgreSQL and a local EventBridge (moto, in this process, routing to one alert rule's
SQS queue, as a deployed stack with the default alert would), and the event builder alone.

    make bench ARGS=events
    .venv/bin/python bench/bench_events.py --count 2000

moto answers PutEvents in-process; EventBridge's own latency (a few tens of ms a call) is not
in it. The last line is machine-readable:
    events: published=<n> per_s=<events/s> batch_ms_p50=<ms> build_per_s=<events/s>"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import timedelta

from support import fresh_database, use_real_corpus

from killstream.config import DatabaseConfig
from killstream.events.bus import EventBus
from killstream.events.detail import killmail_event
from killstream.events.publisher import EventPublisher
from killstream.killmail import parse_killmail, parse_zkb
from killstream.observability import logger
from killstream.storage.connection import Database, connect
from killstream.storage.publication import PublicationStore
from killstream.storage.writer import KillmailRecord, KillmailStore
from killstream_workstation import corpus
from killstream_workstation.alerts.patterns import DEFAULT_PATTERN
from killstream_workstation.local.aws import LocalAws

logger.setLevel("WARNING")
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    use_real_corpus()
    docs = corpus.renumber(corpus.sample(), args.count)
    records = []
    for doc in docs:
        esi, killmail_hash = corpus.split_hash(doc)
        records.append(
            KillmailRecord(parse_killmail(esi), killmail_hash, parse_zkb(corpus.zkb_for(doc)), "bench", publish=True)
        )
    with fresh_database("killstream_bench_events") as url:
        conn = connect(url)
        for start in range(0, len(records), 500):
            KillmailStore(conn).write(records[start : start + 500])
        rows = PublicationStore(conn).stored_since(timedelta(days=1), args.count)
        conn.close()
        started = time.perf_counter()
        built = [killmail_event(row) for row in rows]
        build_per_s = len(built) / (time.perf_counter() - started)

        aws = LocalAws(visibility_timeout=30, prefix="killstream-bench").start()
        try:
            # the deployed default rule (>= 10 B ISK): moto evaluates it for every event; its SQS
            # sends slow down as messages pile up on the queue, which is moto's cost, not ours
            alert = aws.create_alert(
                pattern=json.dumps(DEFAULT_PATTERN), webhook_url="http://x/", visibility_timeout=30
            )
            database = Database(DatabaseConfig(url, None, None, None))
            publisher = EventPublisher(EventBus(aws.event_bus_name, aws.client("events")), database)
            ids = [doc["killmail_id"] for doc in docs]
            batches, published = [], 0
            started = time.perf_counter()
            for start in range(0, len(ids), 10):
                began = time.perf_counter()
                publication = publisher.publish(ids[start : start + 10], time_left=30)
                batches.append((time.perf_counter() - began) * 1000)
                assert not publication.failed, publication.failed
                published += len(publication.published)
            elapsed = time.perf_counter() - started
            matched = aws.queue_depth(alert.queue_url)
        finally:
            aws.stop()
            database.close()
    per_s = published / elapsed
    p50 = statistics.median(batches)
    print(f"{published:,} killmail events published in batches of 10 in {elapsed:.1f} s: {per_s:,.0f} events/s")
    print(f"   per batch: p50 {p50:.1f} ms (unpublished query with names, build, PutEvents to moto, mark)")
    print(f"   the default alert rule on the bus (>= 10B ISK) routed {matched} of them to its queue")
    print(f"   the event builder alone: {build_per_s:,.0f} events/s")
    print(f"events: published={published} per_s={per_s:.0f} batch_ms_p50={p50:.1f} build_per_s={build_per_s:.0f}")


if __name__ == "__main__":
    main()
