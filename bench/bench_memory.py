"""Peak memory of the fetcher on a batch of the 10 largest killmails (ESI document inline),
through the real handler and PostgreSQL, in a fresh interpreter: the figure to hold against
the function's 256 MB.

    .venv/bin/python bench/bench_memory.py

Last line: memory: baseline_mb=<after imports> peak_mb=<peak RSS> batch_kb=<bodies> of 256 MB"""

from __future__ import annotations

import json
import os
import resource


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def main() -> None:
    from support import fresh_database, use_real_corpus

    from killstream_workstation import corpus
    from killstream_workstation.local.lambda_runtime import LambdaContext, load_handler_module, sqs_record

    use_real_corpus()
    docs = corpus.sample()
    largest = sorted(docs, key=lambda d: len(json.dumps(d)), reverse=True)[:10]
    records = []
    for doc in largest:
        esi, killmail_hash = corpus.split_hash(doc)
        body = json.dumps(
            {
                "killmail_id": doc["killmail_id"],
                "hash": killmail_hash,
                "zkb": corpus.zkb_for(doc),
                "esi": esi,
                "source": "r2z2",
            }
        )
        records.append(sqs_record(body, str(doc["killmail_id"])))
    batch_kb = sum(len(r["body"]) for r in records) / 1024
    with fresh_database("bench_memory") as url:
        os.environ.update(
            {
                "DATABASE_URL": url,
                "DLQ_URL": "http://127.0.0.1:9/000000000000/unused",
                "USER_AGENT": "killstream-bench/0.1 (b@example.com)",
                "AWS_DEFAULT_REGION": "us-east-1",
                "POWERTOOLS_METRICS_DISABLED": "true",
                "POWERTOOLS_LOG_LEVEL": "WARNING",
            }
        )
        handler = load_handler_module("fetcher").handler
        baseline = rss_mb()
        response = handler({"Records": records}, LambdaContext("bench-fetcher", 60))
        assert response["batchItemFailures"] == [], response
        peak = rss_mb()
    print(
        f"fetcher on the 10 largest killmails ({batch_kb:.0f} KB of message bodies): RSS {baseline:.0f} MB after "
        f"imports, peak {peak:.0f} MB — {peak / 256:.0%} of a 256 MB function (this interpreter's own "
        f"baseline included)"
    )
    print(f"memory: baseline_mb={baseline:.0f} peak_mb={peak:.0f} batch_kb={batch_kb:.0f} of 256 MB")


if __name__ == "__main__":
    main()
