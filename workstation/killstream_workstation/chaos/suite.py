"""Fault injection over the whole local pipeline: replay thousands of killmails while the
feed, ESI, SQS, the database and the poller itself misbehave — the poller down longer than
R2Z2's live window among them, so files expire unread — then prove that every killmail is stored
exactly once, with zKillboard's latest values, that the DLQ holds only what was injected as
permanently bad, that a redrive brings home everything that failed for transient reasons, and
that the reconciler brings home what expired. The feed behaves as zKillboard's publisher does
(docs/protocols.md, "R2Z2"): files rewritten in place and pointed at from later ones, null
placeholders, gaps, stale 404s (inside gap searches too); SQS fails and hangs; messages that
cannot be encoded land in the queue. The RedisQ phase (chaos/redisq.py) drains a backlog with
short ticks.

Run by `make chaos` (bench/chaos.py); a smaller run is part of `make test`."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import boto3

from killstream.killmail import parse_killmail
from killstream.observability import logger
from killstream.package import Package
from killstream.storage.connection import connect
from killstream_workstation import corpus
from killstream_workstation.chaos.aws_faults import AwsFaults
from killstream_workstation.chaos.report import ChaosRates, ChaosReport
from killstream_workstation.dlq.inspect import inspect_dlq
from killstream_workstation.dlq.redrive import redrive
from killstream_workstation.local.console import RunStats
from killstream_workstation.local.pipeline import LocalPipeline, PipelineSettings
from killstream_workstation.simulators.faults import FaultRates

INVALID_KILLMAIL = "esi_invalid_killmail"
INVALID_MESSAGE = "invalid_message"
PERMANENT = {INVALID_KILLMAIL, INVALID_MESSAGE}
"""What the DLQ may hold in the end: the killmails injected bad (a wrong hash; a body that does
not encode). Everything else that reached it failed for a transient reason and is redriven."""
UNENCODABLE_FIRST_ID = 900_000_000


def unencodable_body(doc: dict, killmail_id: int) -> str:
    """A valid package but for its source: JSON's escape for a lone surrogate (defect 7)."""
    esi, killmail_hash = corpus.split_hash(doc)
    package = Package(killmail_id, killmail_hash, corpus.zkb_for(doc), "r2z2", dict(esi, killmail_id=killmail_id))
    return package.to_body().replace('"source":"r2z2"', '"source":"\\ud800"')


def _expected_rows(docs: dict[int, dict]) -> tuple[int, int]:
    attackers = items = 0
    for doc in docs.values():
        km = parse_killmail(corpus.split_hash(doc)[0])
        attackers += len(km.attackers)
        items += len(km.items)
    return attackers, items


def run_chaos(
    database_url: str,
    *,
    count: int = 2000,
    rates: ChaosRates | None = None,
    seed: int = 2026,
    restart_database: Callable[[float], None] | None = None,
    timeout: float = 900.0,
    progress: Callable[[str], None] = print,
    progress_every: float = 15.0,
) -> ChaosReport:
    """`progress` gets a line per phase, and one every `progress_every` seconds while the
    pipeline drains."""
    rates = rates or ChaosRates()
    rng = random.Random(seed)
    report = ChaosReport()
    started = time.monotonic()
    # over three complete UTC days that zKillboard's history (the local one) already serves
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=n) for n in (4, 3, 2)]
    docs = corpus.on_days(corpus.renumber(corpus.sample(), count, first_id=500_000_000), days)
    by_id = {doc["killmail_id"]: doc for doc in docs}

    settings = PipelineSettings(
        database_url=database_url,
        user_agent="killstream-chaos/1.0 (chaos@example.com)",
        replay=[],
        pacing_ms=5,
        budget_seconds=20,
        tick_interval=0,
        visibility_timeout=3,
        fetcher_workers=2,
        duplicate_delivery_rate=rates.duplicate_delivery,
        seed=seed,
    )
    pipeline = LocalPipeline(settings, RunStats()).setup()
    assert pipeline.replay is not None  # settings.replay=[]: a local feed, published to below
    r2z2, esi = pipeline.replay.r2z2, pipeline.replay.esi
    # its own generator: the publisher's choices stay the same for a seed whatever the threads do
    aws_faults = AwsFaults(pipeline.aws.queue_url, rates, random.Random(seed + 1), report.injected)
    aws_faults.install()
    r2z2.faults.rates = FaultRates(
        rate_429=rates.source_429,
        rate_5xx=rates.source_5xx,
        rate_stall=rates.source_stall,
        rate_garbage=rates.source_garbage,
        stall_seconds=6.0,
    )
    esi.faults.rates = FaultRates(rate_429=rates.esi_429, rate_5xx=rates.esi_5xx)
    for _ in range(rates.esi_420_bursts):
        esi.faults.script(
            status=420, headers={"X-ESI-Error-Limit-Reset": "1", "X-ESI-Error-Limit-Remain": "0"}, times=3
        )

    invalid_ids: set[int] = set()
    unencodable_ids: set[int] = set()
    latest_zkb: dict[int, dict] = {}
    sequence_of: dict[int, int] = {}
    """The file each killmail was last published as, while it is still served (not expired)."""
    restart_after = int(count * rates.database_restart_at) if restart_database else None
    outage_from = int(count * rates.outage_at) if rates.outage_publications else None
    outage_until = None if outage_from is None else min(count, outage_from + rates.outage_publications)
    feed_sqs = pipeline.aws.client("sqs")
    published = 0

    def in_outage(n: int) -> bool:
        return outage_from is not None and outage_until is not None and outage_from <= n < outage_until

    def revalue(killmail_id: int, *, read: bool = True) -> dict:
        """New values for a killmail; the ones to expect stored only when the poller will `read` them."""
        zkb = latest_zkb[killmail_id]
        revalued = dict(zkb, totalValue=round(zkb["totalValue"] * 1.1 + 1, 2), labels=[*zkb["labels"], "ganked"])
        if read:
            latest_zkb[killmail_id] = revalued
        return revalued

    def pointer_served(n: int) -> bool:
        """Whether an update made now has its pointer ride on a file the poller will read: the
        pending pointers go one per new file, and the files of an outage expire unread."""
        if outage_from is None or outage_until is None or n >= outage_until:
            return True
        return outage_from - n - 1 > r2z2.pending_pointers

    def publish_all():
        nonlocal published
        outage_first = 0
        gap_before = False
        for n, doc in enumerate(docs):
            published = n + 1
            esi_doc, killmail_hash = corpus.split_hash(doc)
            zkb = corpus.zkb_for(doc)
            inline = rng.random() < 0.5
            if not inline and rng.random() < rates.invalid:
                invalid_ids.add(doc["killmail_id"])
                killmail_hash = corpus.fake_hash(doc["killmail_id"], "wrong")
                zkb["hash"] = killmail_hash
            else:
                esi.add(esi_doc, killmail_hash)
            latest_zkb[doc["killmail_id"]] = zkb
            if n == outage_from:
                pipeline.poller_paused.set()  # the poller is down: its tick ends, no other starts
                report.injected["poller_outage"] += 1
                outage_first = r2z2.head + 1
            sequence = r2z2.publish(
                esi_doc,
                killmail_hash,
                zkb,
                include_esi=inline,
                esi_null=rng.random() < 0.5,
                raw=doc["killmail_id"] not in invalid_ids,
            )
            if not in_outage(n):
                sequence_of[doc["killmail_id"]] = sequence
                # the first file after the first gap always meets the gap search with a stale 404
                first_gap_after = gap_before and not report.injected["stale_404_in_gap"]
                if first_gap_after or rng.random() < (rates.stale_after_gap if gap_before else rates.stale_404):
                    r2z2.stale_404(sequence)
                    report.injected["stale_404_in_gap" if gap_before else "stale_404"] += 1
            gap_before = False
            # at least one gap a run, however the dice fall
            forced_gap = rates.gap > 0 and n == len(docs) // 2 and not report.injected["sequence_gap"]
            if forced_gap or rng.random() < rates.gap:
                r2z2.skip(rng.randint(1, 3))
                report.injected["sequence_gap"] += 1
                gap_before = not in_outage(n)
            if rng.random() < rates.placeholder:
                r2z2.publish_placeholder()
                report.injected["placeholder"] += 1
            updatable = [k for k in sequence_of if k not in invalid_ids]
            # each update's pointer rides on a later new file: only while enough are still to come
            if (
                updatable
                and r2z2.pending_pointers < len(docs) - n - 2
                and pointer_served(n)
                and rng.random() < rates.update_in_place
            ):
                again = rng.choice(updatable)
                r2z2.update_in_place(sequence_of[again], revalue(again))
                report.updated_in_place += 1
            if updatable and rng.random() < rates.republish:
                again = rng.choice(updatable)
                # a re-publication while the poller is down expires unread
                republished = r2z2.republish(again, revalue(again, read=not in_outage(n)))
                if not in_outage(n):
                    sequence_of[again] = republished
                report.republished += 1
            if rng.random() < rates.unencodable:
                killmail_id = UNENCODABLE_FIRST_ID + len(unencodable_ids)
                unencodable_ids.add(killmail_id)
                feed_sqs.send_message(QueueUrl=pipeline.aws.queue_url, MessageBody=unencodable_body(doc, killmail_id))
                report.unencodable += 1
            if n + 1 == outage_until:
                # down longer than R2Z2 keeps files: those published meanwhile 404 for good
                r2z2.expire(r2z2.head, from_sequence=outage_first)
                pipeline.poller_paused.clear()
            if restart_after is not None and n == restart_after:
                report.injected["database_restart"] += 1
                outage.start()
            time.sleep(0.002)

    def take_the_database_down() -> None:
        if restart_database is not None:
            restart_database(rates.database_downtime)

    outage = threading.Thread(target=take_the_database_down, name="chaos-db-outage")
    publisher = threading.Thread(target=publish_all, name="chaos-publisher")
    pipeline.start()
    publisher.start()

    # Queue depths are approximate in SQS (and moto): drained means seen empty twice in a row.
    def drained() -> bool:
        return (
            not publisher.is_alive()
            and not outage.is_alive()
            and pipeline.aws.queue_depth(pipeline.aws.queue_url) == 0
            and _cursor(pipeline) >= r2z2.head
        )

    next_report = time.monotonic() + progress_every

    def drained_twice() -> bool:
        nonlocal next_report
        if time.monotonic() >= next_report:
            next_report += progress_every
            with pipeline.stats.lock:
                saved = pipeline.stats.outcomes["saved"]
            progress(
                f"chaos: {time.monotonic() - started:.0f} s — published {published} of {count}, saved {saved}, "
                f"queue {pipeline.aws.queue_depth(pipeline.aws.queue_url)}, "
                f"DLQ {pipeline.aws.queue_depth(pipeline.aws.dlq_url)}"
            )
        return drained() and drained()

    try:
        progress(f"chaos: phase 1 of 4 — publishing {count} killmails under faults, until the pipeline drains")
        if not pipeline.wait_until(drained_twice, timeout=timeout, poll=1.0):
            progress("chaos: the pipeline did not drain in time")
        progress(
            f"chaos: phase 2 of 4 — drained after {time.monotonic() - started:.0f} s: faults cleared, "
            "redriving the transient failures from the DLQ"
        )
        with aws_faults.lock:
            aws_faults.active = False
        r2z2.faults.clear()
        esi.faults.clear()
        pipeline.settings.duplicate_delivery_rate = 0.0

        sqs = pipeline.aws.client("sqs")
        inspection = inspect_dlq(sqs, pipeline.aws.dlq_url)
        transient = sorted(set(inspection.counts) - PERMANENT)
        if transient:
            result = redrive(
                sqs, pipeline.aws.dlq_url, pipeline.aws.queue_url, error_types=transient, prefer_move_task=False
            )
            report.redriven = result.moved
            progress(f"chaos: redrove {result.moved} transient failures ({', '.join(transient)})")
            pipeline.wait_until(drained_twice, timeout=timeout, poll=1.0)
        _count_database(database_url, by_id, invalid_ids | unencodable_ids, latest_zkb, report)
        report.lost_before_reconcile = report.lost
        # The reconciler's Lambda, as its schedule would run it, on the days published: what expired
        # goes onto the queue as history packages, and the fetcher brings it home.
        progress(f"chaos: phase 3 of 4 — {report.lost} killmails missing: the reconciler over {days[0]} to {days[-1]}")
        window = {"from": f"{days[0]}", "to": f"{days[-1]}"}
        report.reconciled = pipeline.run_reconciler(window)["killmails_enqueued"]
        progress(f"chaos: reconciler: {report.reconciled} killmails queued; draining")
        pipeline.wait_until(drained_twice, timeout=timeout, poll=1.0)
        report.days = pipeline.run_reconciler(window)["days"]  # and the next run finds the days settled
        progress("chaos: phase 4 of 4 — counting what the DLQ and the database hold")
        final = inspect_dlq(sqs, pipeline.aws.dlq_url)
    finally:
        publisher.join()
        if outage.ident:
            outage.join()
        report.injected["duplicate_delivery"] = pipeline.duplicate_deliveries
        pipeline.stop()
        report.poller_overruns = pipeline.poller_overruns
        boto3.DEFAULT_SESSION = None

    report.dlq_by_reason = Counter(final.counts)
    report.dlq = sum(final.counts.values())
    report.injected_invalid = len(invalid_ids)
    report.unexpected_in_dlq = sum(1 for m in final.messages if m.killmail_id not in invalid_ids | unencodable_ids)
    report.unexpected_in_dlq += sum(n for reason, n in final.counts.items() if reason not in PERMANENT)
    # and each unencodable message is there, with its reason: none dropped in silence
    report.unexpected_in_dlq += len(unencodable_ids - {m.killmail_id for m in final.messages})
    report.injected.update(f"r2z2_{f.status or f.kind}" for f in r2z2.faults.injected)
    report.injected.update(f"esi_{f.status or f.kind}" for f in esi.faults.injected)
    _count_database(database_url, by_id, invalid_ids | unencodable_ids, latest_zkb, report)
    # The primary key makes a second row impossible; a second *insert* the application believed
    # it made (two "saved" outcomes for one killmail) is what would show a doubled delivery.
    report.duplicates += max(0, pipeline.stats.outcomes["saved"] - report.stored)
    report.seconds = time.monotonic() - started
    return report


def _cursor(pipeline: LocalPipeline) -> int:
    value = pipeline.aws.client("ssm").get_parameter(Name=pipeline.aws.cursor_parameter)["Parameter"]["Value"]
    return int(value) if value.isdigit() else -1


def _count_database(
    url: str, by_id: dict[int, dict], invalid_ids: set[int], latest_zkb: dict[int, dict], report: ChaosReport
) -> None:
    """What the database holds of this run's killmails (and of those injected bad, which must
    not be there; the RedisQ phase's, in the same database, are not this run's)."""
    ids = sorted(set(by_id) | invalid_ids)
    conn = connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT killmail_id, zkb_total_value FROM killmails WHERE killmail_id = ANY(%s)", (ids,))
            stored = {kid: None if value is None else float(value) for kid, value in cur.fetchall()}
            cur.execute(
                "SELECT (SELECT count(*) FROM attackers WHERE killmail_id = ANY(%s)),"
                " (SELECT count(*) FROM items WHERE killmail_id = ANY(%s))",
                (ids, ids),
            )
            attackers, items = cur.fetchone() or (0, 0)
    finally:
        conn.close()
    good = set(by_id) - invalid_ids
    expected_attackers, expected_items = _expected_rows({k: by_id[k] for k in stored if k in by_id})
    report.published = len(by_id)
    report.stored = len(stored)
    report.lost = len(good - set(stored))
    # the primary key makes a doubled killmail row impossible; doubled children are what to look for
    report.duplicates = (attackers - expected_attackers) + (items - expected_items) + len(set(stored) - good)
    # a killmail stored from history has no zkb until a live publication brings it: not stale
    report.without_zkb = sum(1 for value in stored.values() if value is None)
    report.stale_zkb = sum(
        1
        for kid, value in stored.items()
        if kid in latest_zkb and value is not None and abs(value - latest_zkb[kid]["totalValue"]) > 0.005
    )
    logger.debug("chaos counted", extra={"stored": len(stored), "attackers": attackers, "items": items})
