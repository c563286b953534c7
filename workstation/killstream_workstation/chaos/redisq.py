"""The RedisQ phase of the chaos suite (docs/protocols.md, "RedisQ"): a backlog drained by
short ticks, so many end right after a listen popped a package, some asked to stop part-way (as
SIGTERM or Ctrl+C would), while SQS fails and hangs and RedisQ answers 5xx and 429. Reads are
destructive: whatever the poller could not hand on it logs at ERROR, the package whole or the
object URL RedisQ still serves, and that is recovered here as an operator would recover it.
Then every published killmail must be stored exactly once."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

import boto3
import requests

from killstream.observability import logger
from killstream.package import from_redisq
from killstream.storage.connection import connect
from killstream_workstation import corpus
from killstream_workstation.chaos.aws_faults import AwsFaults
from killstream_workstation.chaos.report import ChaosRates, RedisQChaosReport
from killstream_workstation.local.console import RunStats
from killstream_workstation.local.pipeline import LocalPipeline, PipelineSettings
from killstream_workstation.simulators.esi import EsiServer
from killstream_workstation.simulators.faults import FaultRates
from killstream_workstation.simulators.redisq import RedisQServer

QUEUE_ID = "killstream-chaos"
USER_AGENT = "killstream-chaos/1.0 (chaos@example.com)"
NOT_TAKEN = "SQS would not take package after every attempt"
NOT_READ = "RedisQ package popped from the queue but not read"


class _LastCopies(logging.Handler):
    """The poller's ERROR lines that are the only copy of a package."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.packages: list[str] = []
        self.object_urls: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message == NOT_TAKEN:
            self.packages.append(getattr(record, "package", ""))
        elif message.startswith(NOT_READ):
            self.object_urls.append(getattr(record, "object_url", ""))


def run_redisq_chaos(
    database_url: str,
    *,
    count: int = 300,
    rates: ChaosRates | None = None,
    seed: int = 2026,
    timeout: float = 600.0,
    progress: Callable[[str], None] = print,
) -> RedisQChaosReport:
    rates = rates or ChaosRates()
    rng = random.Random(seed)
    report = RedisQChaosReport()
    started = time.monotonic()
    docs = corpus.renumber(corpus.sample(), count, first_id=700_000_000)
    esi = EsiServer().start()
    esi.add_many(docs)
    redisq = RedisQServer(ttw_scale=0.05, redirect_delay=0.05, seed=seed).start()
    # The queue is made on its first listen with every package published before it: a backlog.
    for doc in docs:
        esi_doc, killmail_hash = corpus.split_hash(doc)
        redisq.publish(esi_doc, killmail_hash, corpus.zkb_for(doc), include_killmail=rng.random() < 0.5)
    report.published = len(docs)
    settings = PipelineSettings(
        database_url=database_url,
        user_agent=USER_AGENT,
        source="redisq",
        pacing_ms=20,
        budget_seconds=1,
        tick_interval=0,
        visibility_timeout=3,
        fetcher_workers=2,
        stop_request_rate=0.3,
        seed=seed,
        extra_env={"REDISQ_URL": redisq.url, "REDISQ_QUEUE_ID": QUEUE_ID, "ESI_URL": esi.url},
    )
    pipeline = LocalPipeline(settings, RunStats()).setup()
    aws_faults = AwsFaults(pipeline.aws.queue_url, rates, random.Random(seed + 1), report.injected)
    aws_faults.install()
    redisq.faults.rates = FaultRates(rate_5xx=rates.source_5xx, rate_429=rates.source_429, retry_after="0")
    last_copies = _LastCopies()
    logging.getLogger(logger.name).addHandler(last_copies)

    ids = sorted(doc["killmail_id"] for doc in docs)

    def drained() -> bool:
        # Everything popped is stored, or logged as a last copy; a package popped but still on
        # its way (read, not yet sent) is neither, so the queue being empty is not enough.
        backlog = redisq.queues.get(QUEUE_ID)
        if backlog is None or backlog or pipeline.aws.queue_depth(pipeline.aws.queue_url):
            return False
        return _stored_count(database_url, ids) + len(last_copies.packages) + len(last_copies.object_urls) >= (
            redisq.popped
        )

    try:
        pipeline.start()
        if not pipeline.wait_until(lambda: drained() and drained(), timeout=timeout, poll=0.5):
            progress("chaos redisq: the backlog did not drain in time")
        with aws_faults.lock:
            aws_faults.active = False
        redisq.faults.clear()
        report.recovered_from_log = _recover(pipeline, last_copies)
        if not pipeline.wait_until(lambda: _stored_count(database_url, ids) >= len(ids), timeout=timeout, poll=0.5):
            progress("chaos redisq: not everything was stored in time")
        report.dlq = pipeline.refresh_dlq_count()
    finally:
        logging.getLogger(logger.name).removeHandler(last_copies)
        pipeline.stop()
        redisq.stop()
        esi.stop()
        boto3.DEFAULT_SESSION = None
    report.popped = redisq.popped
    report.ticks = pipeline.poller_ticks
    report.poller_overruns = pipeline.poller_overruns
    report.injected["stop_requested"] = pipeline.stop_requests
    report.injected.update(f"redisq_{f.status or f.kind}" for f in redisq.faults.injected)
    conn = connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT killmail_id, attacker_count FROM killmails WHERE killmail_id = ANY(%s)", (sorted(ids),))
            stored = dict(cur.fetchall())
            cur.execute("SELECT count(*) FROM attackers WHERE killmail_id = ANY(%s)", (sorted(ids),))
            (attackers,) = cur.fetchone() or (0,)
    finally:
        conn.close()
    report.stored = len(stored)
    report.lost = len(set(ids) - set(stored))
    report.duplicates = (attackers - sum(stored.values())) + max(0, pipeline.stats.outcomes["saved"] - len(stored))
    report.seconds = time.monotonic() - started
    return report


def _stored_count(database_url: str, ids: list[int]) -> int:
    conn = connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM killmails WHERE killmail_id = ANY(%s)", (ids,))
            (count,) = cur.fetchone() or (0,)
    finally:
        conn.close()
    return count


def _recover(pipeline: LocalPipeline, copies: _LastCopies) -> int:
    """Send again what only the log still holds: packages SQS would not take, and objects RedisQ
    popped that were never read (fetched now, by their URL)."""
    sqs = pipeline.aws.client("sqs")
    bodies = list(copies.packages)
    for url in copies.object_urls:
        answer = requests.get(url, headers={"User-Agent": USER_AGENT}, timeout=10)
        bodies.append(from_redisq(answer.json()["package"]).to_body())
    for body in bodies:
        sqs.send_message(QueueUrl=pipeline.aws.queue_url, MessageBody=body)
    return len(bodies)
