"""A smaller run of the fault-injection suite (make chaos runs ≥ 2,000 killmails)."""

import os

from killstream_workstation.chaos.redisq import run_redisq_chaos
from killstream_workstation.chaos.report import ChaosRates
from killstream_workstation.chaos.suite import run_chaos


def test_nothing_lost_nothing_doubled_under_faults(database_url, restore_environ, request):
    restart = None if os.environ.get("DATABASE_URL") else request.getfixturevalue("postgres_server").restart
    # higher rates than make chaos, so a short run still meets every fault
    rates = ChaosRates(
        invalid=0.03,
        gap=0.01,
        republish=0.02,
        update_in_place=0.06,
        placeholder=0.02,
        stale_404=0.01,
        unencodable=0.03,
        sqs_send_failure=0.2,
        sqs_hang=0.02,
        poller_kill=0.5,
        database_downtime=16.0,
        outage_at=0.7,
        outage_publications=40,
    )
    progress: list[str] = []
    report = run_chaos(
        database_url, count=300, rates=rates, seed=11, restart_database=restart, timeout=240, progress=progress.append
    )
    print("\n".join(report.lines()))
    # a long run shows where it is: a line per phase
    assert [line.split(" — ")[0] for line in progress if " of 4 — " in line] == [
        f"chaos: phase {n} of 4" for n in (1, 2, 3, 4)
    ]
    assert report.lost == 0 and report.duplicates == 0
    assert report.stale_zkb == 0
    assert report.stored == report.published - report.injected_invalid
    assert report.injected_invalid > 0 and report.unencodable > 0
    assert set(report.dlq_by_reason) == {"esi_invalid_killmail", "invalid_message"}
    # each bad message is there once, or again when it was delivered twice
    bad = report.injected_invalid + report.unencodable
    assert bad <= report.dlq <= bad + report.injected["duplicate_delivery"]
    assert report.unexpected_in_dlq == 0 and report.poller_overruns == 0
    assert report.updated_in_place > 0 and report.republished > 0
    for fault in (
        "database_restart",
        "sqs_send_failure",
        "sqs_hang",
        "poller_killed",
        "sequence_gap",
        "placeholder",
        "stale_404",
        "stale_404_in_gap",
        "poller_outage",
    ):
        assert report.injected[fault] > 0, f"{fault} was never injected"
    # the outage outlasted R2Z2's files: lost until the reconciler queued them, home after
    assert report.lost_before_reconcile > 0 and report.reconciled >= report.lost_before_reconcile
    assert set(report.days.values()) <= {"complete", "incomplete"}
    # the outage outlasted 5 receives: those killmails went to the DLQ and the redrive brought them home
    assert report.redriven > 0


def test_redisq_tick_ends_with_a_backlog_lose_nothing(database_url, restore_environ):
    """Defect 1 under faults: a backlog drained by 1 s ticks (many end right after a pop, some
    are asked to stop part-way), SQS failing and hanging, RedisQ answering 5xx and 429."""
    rates = ChaosRates(sqs_send_failure=0.1, sqs_hang=0.03, source_5xx=0.05, source_429=0.02)
    report = run_redisq_chaos(database_url, count=80, rates=rates, seed=5, timeout=180, progress=lambda line: None)
    print(report.line())
    assert report.ok, report.line()
    assert report.popped == report.published == report.stored == 80
    assert report.ticks >= 5 and report.injected["stop_requested"] > 0
    assert report.injected["sqs_send_failure"] > 0
