"""Fault injection over the whole local pipeline (make chaos).

    make chaos                         # 2,000 killmails (the real ones re-numbered)
    make chaos ARGS="--count 5000 --seed 7"

Uses $DATABASE_URL, else a private PostgreSQL it restarts in the middle of the run. First the
RedisQ phase (a backlog drained by short ticks; --redisq-count killmails), then the R2Z2 run.
The last lines are the figure lines:
    chaos redisq: published=<n> popped=<n> stored=<n> duplicates=<n> lost=<n> recovered_from_log=<n> …
    chaos: published=<n> stored=<n> duplicates=<n> lost=<n> dlq=<n> redriven=<n>
Exit status 1 unless, in both, lost = 0 and duplicates = 0, the DLQ holds only the injected bad
killmails, every stored zkb is the latest (in-place updates included) and no poller invocation
outlived its timeout."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

from support import use_real_corpus

from killstream.observability import logger
from killstream_workstation.chaos.redisq import run_redisq_chaos
from killstream_workstation.chaos.report import ChaosRates
from killstream_workstation.chaos.suite import run_chaos
from killstream_workstation.local.database import migrate_database
from killstream_workstation.local.postgres import EmbeddedPostgres


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--redisq-count", type=int, default=400, help="killmails in the RedisQ phase's backlog")
    parser.add_argument("--verbose", action="store_true", help="the handlers' log lines too")
    args = parser.parse_args()
    use_real_corpus()
    if not args.verbose:
        # thousands of injected failures log at WARNING/ERROR by design: print none of it, but keep
        # the records flowing, since the run counts the fetcher's outcomes from them
        logger.registered_handler.addFilter(lambda record: False)

    server, root = None, ""
    url = os.environ.get("DATABASE_URL")
    if not url:
        root = tempfile.mkdtemp(prefix="killstream-chaos-")
        os.chmod(root, 0o755)
        server = EmbeddedPostgres(os.path.join(root, "data")).start()
        url = server.create_database("chaos")
        migrate_database(url)
    try:
        print(f"chaos: rates {ChaosRates()}")
        print(f"chaos redisq: a backlog of {args.redisq_count} drained by 1 s ticks (seed {args.seed})", flush=True)
        redisq = run_redisq_chaos(url, count=args.redisq_count, seed=args.seed)
        print(redisq.line(), flush=True)
        print(f"chaos: replaying {args.count} killmails with faults (seed {args.seed})", flush=True)
        report = run_chaos(url, count=args.count, seed=args.seed, restart_database=server.restart if server else None)
    finally:
        if server:
            server.stop()
            shutil.rmtree(root, ignore_errors=True)
    print("\n".join(report.lines()[:-1]))
    print(redisq.line())
    print(report.lines()[-1])
    return 0 if report.ok and redisq.ok else 1


if __name__ == "__main__":
    sys.exit(main())
