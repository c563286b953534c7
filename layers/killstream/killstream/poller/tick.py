"""One poller tick: drain the live feed into SQS, paced, until the budget is spent or the
Lambda's remaining time falls under what finishing needs; then flush and save the cursor, and
report what happened (one summary line, metrics, the returned summary)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import boto3
from botocore.config import Config

from killstream.config import PollerConfig
from killstream.errors import BUDGET, ENQUEUE_FAILED, REMAINING_TIME, ConfigError, StopTick
from killstream.http.gate import Gate
from killstream.observability import Metric, MetricUnit, logger, metrics
from killstream.package import Package
from killstream.poller.counts import TickCounts
from killstream.poller.cursor import CursorStore
from killstream.poller.sink import SendReport, SqsSink
from killstream.poller.sources.base import PollResult, Source
from killstream.poller.sources.r2z2 import R2Z2Source
from killstream.poller.sources.redisq import RedisQSource

FINISH_RESERVE_SECONDS = 2.0
"""Time kept after the last request for the final SendMessageBatch and the cursor write."""

# An AWS call that hangs must not eat the tick either (botocore's own read timeout is 60 s).
AWS_CLIENT_CONFIG = Config(connect_timeout=3, read_timeout=5, retries={"mode": "standard", "max_attempts": 3})

SOURCES: dict[str, type[Source]] = {R2Z2Source.name: R2Z2Source, RedisQSource.name: RedisQSource}

# The tick summary's keys, and the metric each one is published as.
SUMMARY_COUNTS = {
    "received": Metric.PACKAGES_RECEIVED,
    "enqueued": Metric.PACKAGES_ENQUEUED,
    "empty_polls": Metric.EMPTY_POLLS,
    "errors": Metric.SOURCE_ERRORS,
    "invalid": Metric.INVALID_PACKAGES,
    "rate_limited": Metric.RATE_LIMITED,
    "sequence_gaps": Metric.SEQUENCE_GAPS,
    "esi_dropped": Metric.ESI_DROPPED_FOR_SIZE,
    "enqueue_failures": Metric.ENQUEUE_FAILURES,
    "refused": Metric.SOURCE_REFUSED,
}


class Ledger:
    """How far the cursor may go: positions in the order they were polled, each held back until
    SQS has taken its packages, so a package SQS refused holds back every later position."""

    def __init__(self, committed: int | None):
        self.committed = committed
        self._open: deque[tuple[int, dict[int, Package]]] = deque()

    def record(self, through: int, packages: list[Package]) -> None:
        # Keyed by identity, and holding the packages so no identity is reused while open.
        self._open.append((through, {id(package): package for package in packages}))
        self._advance()

    def settle(self, packages: list[Package]) -> None:
        for package in packages:
            for _, waiting in self._open:
                waiting.pop(id(package), None)
        self._advance()

    def _advance(self) -> None:
        while self._open and not self._open[0][1]:
            self.committed = self._open.popleft()[0]


class Poller:
    def __init__(
        self,
        source: Source,
        sink: SqsSink,
        cursor_store: CursorStore | None,
        gate: Gate,
        counts: TickCounts,
        *,
        budget_seconds: float,
    ):
        self.source = source
        self.sink = sink
        self.cursor_store = cursor_store
        self.gate = gate
        self.counts = counts
        self.budget_seconds = budget_seconds
        self._ledger = Ledger(None)

    @classmethod
    def from_config(
        cls,
        config: PollerConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Poller:
        gate = Gate(config.pacing_ms / 1000, clock=clock, sleep=sleep)
        counts = TickCounts()
        source = SOURCES[config.source].from_config(config, gate, counts)
        cursor_store = None
        if source.keeps_cursor:
            if not config.cursor_parameter:
                raise ConfigError("CURSOR_PARAMETER", "is required")
            ssm = boto3.client("ssm", config=AWS_CLIENT_CONFIG)
            cursor_store = CursorStore(ssm, config.cursor_parameter, clock=clock)
        sqs = boto3.client("sqs", config=AWS_CLIENT_CONFIG)
        sink = SqsSink(sqs, config.queue_url, flush_within=source.flush_within, clock=clock, sleep=sleep)
        return cls(source, sink, cursor_store, gate, counts, budget_seconds=config.budget_seconds)

    def tick(self, remaining_ms: Callable[[], int] | None = None) -> dict:
        """Poll until the budget is spent or `remaining_ms()` (the Lambda context's
        get_remaining_time_in_millis) leaves too little to finish; returns the summary."""
        clock = self.gate.clock
        started = clock()
        budget_end = started + self.budget_seconds
        # The last request may start just before the deadline and run to its timeouts.
        reserve = self.source.longest_request + FINISH_RESERVE_SECONDS

        def time_left() -> tuple[float, str]:
            left = budget_end - clock()
            if remaining_ms is not None:
                spare = remaining_ms() / 1000 - reserve
                if spare < left:
                    return spare, REMAINING_TIME
            return left, BUDGET

        cursor = self.cursor_store.load() if self.cursor_store else None
        self._ledger = Ledger(cursor)
        self.counts.reset()
        requests_before = self.gate.started
        self.source.start(cursor)
        self.gate.begin(time_left, self._before_sleep)
        try:
            while True:
                self._take(self.source.poll())
        except StopTick as raised:
            stop = raised
        finally:
            self._finish()
        return self._report(stop, clock() - started, self.gate.started - requests_before)

    def _take(self, result: PollResult) -> None:
        for package in result.packages:
            self.counts.add(Metric.PACKAGES_RECEIVED)
            logger.info(
                "package received",
                extra={
                    "killmail_id": package.killmail_id,
                    "source": package.source,
                    "sequence_id": package.sequence_id,
                },
            )
        if result.through is not None:
            self._ledger.record(result.through, result.packages)
        for package in result.packages:
            self._settle(self.sink.add(package))
        due_at = self.sink.due_at
        if due_at is not None and due_at <= self.gate.clock():
            self._settle(self.sink.flush())
        self._save_cursor()

    def _before_sleep(self, until: float) -> None:
        due_at = self.sink.due_at
        if due_at is not None and due_at <= until:
            self._settle(self.sink.flush())
        self._save_cursor()

    def _settle(self, report: SendReport) -> None:
        self.counts.add(Metric.PACKAGES_ENQUEUED, len(report.accepted))
        self.counts.add(Metric.ENQUEUE_FAILURES, len(report.failed) + len(report.dropped))
        self.counts.add(Metric.ESI_DROPPED_FOR_SIZE, report.esi_dropped)
        # A package too large even without esi will never fit: holding the cursor for it would stall
        # the feed for good, and its full text is in the log.
        self._ledger.settle(report.accepted + report.dropped)
        if report.failed:
            raise StopTick(ENQUEUE_FAILED, f"SQS did not take {len(report.failed)} package(s)")

    def _save_cursor(self, *, final: bool = False) -> None:
        if self.cursor_store is not None:
            self.cursor_store.save(self._ledger.committed, final=final)

    def _finish(self) -> None:
        try:
            self._settle(self.sink.flush())
        except StopTick:
            pass  # counted and logged; the cursor stays before what SQS did not take
        self._save_cursor(final=True)

    def _report(self, stop: StopTick, runtime: float, requests: int) -> dict:
        counts = self.counts
        summary: dict = {"source": self.source.name}
        summary |= {key: counts[metric] for key, metric in SUMMARY_COUNTS.items()}
        summary |= {
            "requests": requests,
            "runtime_seconds": round(runtime, 3),
            "stopped_because": stop.reason,
            "cursor": self.cursor_store.saved if self.cursor_store else None,
            "lag": self.source.lag(self._ledger.committed),
        }
        if stop.detail:
            summary["detail"] = stop.detail
        logger.info("tick done", extra=summary)
        for metric in SUMMARY_COUNTS.values():
            metrics.add_metric(name=metric, unit=MetricUnit.Count, value=counts[metric])
        metrics.add_metric(name=Metric.POLL_SECONDS, unit=MetricUnit.Seconds, value=runtime)
        if summary["lag"] is not None:
            metrics.add_metric(name=Metric.CURSOR_LAG, unit=MetricUnit.Count, value=summary["lag"])
        return summary
