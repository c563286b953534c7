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
    republish: float = 0.03  # zKillboard re-values a killmail already published
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
        return self.lost == 0 and self.duplicates == 0 and self.unexpected_in_dlq == 0 and self.stale_zkb == 0

    def lines(self) -> list[str]:
        faults = ", ".join(f"{k}={v}" for k, v in sorted(self.injected.items()))
        reasons = " ".join(f"{k}={v}" for k, v in sorted(self.dlq_by_reason.items())) or "empty"
        return [
            f"faults injected: {faults}",
            f"zkb: republished={self.republished} stale={self.stale_zkb} from history without zkb={self.without_zkb}; "
            f"invalid injected={self.injected_invalid} unexpected in DLQ={self.unexpected_in_dlq}; {self.seconds:.0f}s",
            f"reconcile: lost before={self.lost_before_reconcile} recovered through the queue={self.reconciled}; "
            f"days: {' '.join(f'{day}={status}' for day, status in sorted(self.days.items())) or 'none'}",
            f"dlq by reason: {reasons}",
            f"chaos: published={self.published} stored={self.stored} duplicates={self.duplicates} lost={self.lost} "
            f"dlq={self.dlq} redriven={self.redriven}",
        ]
