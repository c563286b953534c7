"""What the chaos suite injects (rates) and what it found (the report `make chaos` prints)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class ChaosRates:
    """Each rate is a probability per request, publication or call."""

    source_429: float = 0.02
    source_5xx: float = 0.03
    source_stall: float = 0.002  # stalls past the poller's read timeout
    source_garbage: float = 0.02  # a 200 whose body is not JSON
    gap: float = 0.005  # the publisher skips 1-3 sequence numbers (each costs ~12 s)
    republish: float = 0.01  # a killmail already published is published again under a new number
    update_in_place: float = 0.03  # zKillboard rewrites a file it published; the next new one points at it
    placeholder: float = 0.01  # a null placeholder instead of a killmail
    stale_404: float = 0.02  # a file answers one stale 404 (from a CDN edge) though it exists
    stale_after_gap: float = 0.5  # the first file after a gap does (the gap search meets it)
    unencodable: float = 0.02  # a message whose source is a lone surrogate lands in the queue
    sqs_hang: float = 0.01  # a SendMessageBatch hangs to its read timeout
    esi_5xx: float = 0.03
    esi_429: float = 0.01
    esi_420_bursts: int = 2  # the error limit trips this many times
    invalid: float = 0.01  # published with a wrong hash: ESI answers 422, for ever
    sqs_send_failure: float = 0.03  # SendMessageBatch to the killmail queue fails
    poller_kill: float = 0.1  # the poller dies after SQS took a batch, before the cursor save
    duplicate_delivery: float = 0.03  # a finished SQS record is not deleted and comes again
    database_restart_at: float = 0.4  # share of the feed published when PostgreSQL goes down
    database_downtime: float = 20.0  # seconds: longer than 5 receives x visibility, so some
    # killmails exhaust their retries and need the redrive
    outage_at: float = 0.6  # share of the feed published when the poller goes down
    outage_publications: int = 200  # published while it is down, and expired before it is back:
    # an outage longer than R2Z2's live window; the reconciler brings them home


@dataclass
class ChaosReport:
    published: int = 0
    stored: int = 0
    duplicates: int = 0
    lost: int = 0
    dlq: int = 0
    redriven: int = 0
    dlq_by_reason: Counter = field(default_factory=Counter)
    injected_invalid: int = 0
    unexpected_in_dlq: int = 0
    stale_zkb: int = 0
    republished: int = 0
    updated_in_place: int = 0
    unencodable: int = 0
    poller_overruns: int = 0
    """Poller invocations that outlived their Lambda timeout (a hung SQS must not cause one)."""
    lost_before_reconcile: int = 0
    reconciled: int = 0
    """Killmails the reconciler put on the queue (and the fetcher then stored)."""
    without_zkb: int = 0
    """Stored from history: no zkb (none published live later)."""
    days: dict[str, str] = field(default_factory=dict)
    injected: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.duplicates == 0
            and self.unexpected_in_dlq == 0
            and self.stale_zkb == 0
            and self.poller_overruns == 0
        )

    def lines(self) -> list[str]:
        faults = ", ".join(f"{k}={v}" for k, v in sorted(self.injected.items()))
        reasons = " ".join(f"{k}={v}" for k, v in sorted(self.dlq_by_reason.items())) or "empty"
        return [
            f"faults injected: {faults}",
            f"zkb: updated_in_place={self.updated_in_place} republished={self.republished} stale={self.stale_zkb} "
            f"from history without zkb={self.without_zkb}; invalid injected={self.injected_invalid} "
            f"unencodable={self.unencodable} unexpected in DLQ={self.unexpected_in_dlq}; "
            f"poller overruns={self.poller_overruns}; {self.seconds:.0f}s",
            f"reconcile: lost before={self.lost_before_reconcile} recovered through the queue={self.reconciled}; "
            f"days: {' '.join(f'{day}={status}' for day, status in sorted(self.days.items())) or 'none'}",
            f"dlq by reason: {reasons}",
            f"chaos: published={self.published} stored={self.stored} duplicates={self.duplicates} lost={self.lost} "
            f"dlq={self.dlq} redriven={self.redriven}",
        ]


@dataclass
class RedisQChaosReport:
    """The RedisQ phase: a backlog drained by short ticks while SQS fails and hangs. Reads are
    destructive, so what the poller could not hand on is recovered from its ERROR lines, as an
    operator would (the package logged whole, or the object URL still served)."""

    published: int = 0
    popped: int = 0
    stored: int = 0
    duplicates: int = 0
    lost: int = 0
    recovered_from_log: int = 0
    dlq: int = 0
    ticks: int = 0
    poller_overruns: int = 0
    injected: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0 and self.duplicates == 0 and self.dlq == 0 and self.poller_overruns == 0 and self.popped > 0
        )

    def line(self) -> str:
        faults = ", ".join(f"{k}={v}" for k, v in sorted(self.injected.items())) or "none"
        return (
            f"chaos redisq: published={self.published} popped={self.popped} stored={self.stored} "
            f"duplicates={self.duplicates} lost={self.lost} dlq={self.dlq} "
            f"recovered_from_log={self.recovered_from_log} "
            f"ticks={self.ticks} poller_overruns={self.poller_overruns} ({faults}; {self.seconds:.0f}s)"
        )
