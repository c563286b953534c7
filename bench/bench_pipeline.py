"""End-to-end: the local pipeline (real handlers, moto SQS/SSM over HTTP, local R2Z2 and ESI,
PostgreSQL with fsync on) with ESI answering after 150 ms; half the packages carry their ESI
killmail, half are fetched.

    make bench ARGS="pipeline"     (or: .venv/bin/python bench/bench_pipeline.py --count 600)

Throughput: killmails/s from the first publication to the last commit, everything published at
once. Latency: publication → row stored (stored_at, the writing transaction's time), at a
steady publication rate. Last line:
    pipeline: killmails_per_s=<n> p50_ms=<n> p99_ms=<n> (count=<n>, rate=<n>/s, pacing_ms=<n>)"""

from __future__ import annotations

import argparse
import os

from support import fresh_database, percentile, use_real_corpus

from killstream.observability import logger
from killstream.storage.connection import connect
from killstream_workstation import corpus
from killstream_workstation.local.pipeline import LocalPipeline, PipelineSettings

logger.setLevel("WARNING")  # a line per killmail would be most of the work measured
USER_AGENT = "killstream-bench/0.1 (bench@example.com)"


def stored_times(url: str) -> dict[int, float]:
    conn = connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT killmail_id, extract(epoch FROM stored_at) FROM killmails")
        rows = {kid: float(t) for kid, t in cur.fetchall()}
    conn.close()
    return rows


def run_once(url: str, docs: list[dict], *, rate: float, pacing_ms: int, workers: int) -> tuple[float, list[float]]:
    env_before = dict(os.environ)
    pipeline = LocalPipeline(
        PipelineSettings(
            database_url=url,
            user_agent=USER_AGENT,
            replay=docs,
            replay_rate=rate,
            inline_ratio=0.5,
            esi_latency=0.150,
            pacing_ms=pacing_ms,
            budget_seconds=50,
            tick_interval=0,
            fetcher_workers=workers,
        )
    )
    try:
        pipeline.start()
        ok = pipeline.wait_until(lambda: len(stored_times(url)) >= len(docs), timeout=600, poll=0.5)
        if not ok:
            raise SystemExit(f"pipeline stored only {len(stored_times(url))} of {len(docs)}")
        stored = stored_times(url)
        assert pipeline.replay is not None  # a replay was asked for
        published = pipeline.replay.published_at
    finally:
        pipeline.stop()
        os.environ.clear()
        os.environ.update(env_before)
    first, last = min(published.values()), max(stored.values())
    latencies = [(stored[k] - published[k]) * 1000 for k in published]
    return len(docs) / (last - first), latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--rate", type=float, default=10.0, help="publications/s in the latency run")
    parser.add_argument("--pacing-ms", type=int, default=10)
    parser.add_argument("--fetchers", type=int, default=2, help="concurrent fetchers (template default: 2)")
    args = parser.parse_args()
    use_real_corpus()
    base = corpus.sample()
    print(f"burst: {args.count} killmails published at once, through the whole pipeline…", flush=True)
    with fresh_database("bench_pipeline_burst") as url:
        throughput, _ = run_once(
            url,
            corpus.renumber(base, args.count, first_id=300_000_000),
            rate=0,
            pacing_ms=args.pacing_ms,
            workers=args.fetchers,
        )
    print(
        f"steady: {args.count} killmails published at {args.rate:g}/s (about {args.count / args.rate:.0f} s)…",
        flush=True,
    )
    with fresh_database("bench_pipeline_steady") as url:
        _, latencies = run_once(
            url,
            corpus.renumber(base, args.count, first_id=400_000_000),
            rate=args.rate,
            pacing_ms=args.pacing_ms,
            workers=args.fetchers,
        )
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    print(
        f"burst of {args.count}: {throughput:.1f} killmails/s; steady {args.rate:g}/s: latency p50 {p50:.0f} ms, "
        f"p99 {p99:.0f} ms (ESI 150 ms, {args.fetchers} fetchers, pacing {args.pacing_ms} ms)"
    )
    print(
        f"pipeline: killmails_per_s={throughput:.1f} p50_ms={p50:.0f} p99_ms={p99:.0f} "
        f"(count={args.count}, rate={args.rate:g}/s, pacing_ms={args.pacing_ms})"
    )


if __name__ == "__main__":
    main()
