"""One poller tick: drain the live feed into SQS, paced, until the budget is spent (or a stop is
asked for) or the Lambda's remaining time falls under what finishing needs; then flush and save
the cursor, and report what happened (one summary line, metrics, the returned summary).

Time, on the gate's clock: new work starts before the budget's end; every request is over by
the hard end, which leaves FINISH_MARGIN plus one AWS call per final step (the last
SendMessageBatch, the cursor write) of the Lambda's remaining time; work that must finish (a
package RedisQ popped) passes the budget but never the hard end; and each AWS call starts only
while its longest fits before the Lambda's end (docs/protocols.md, "AWS limits")."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from killstream import aws_clients
from killstream.config import PollerConfig
from killstream.errors import ENQUEUE_FAILED, ConfigError, StopTick
from killstream.http.gate import Gate, Limits
from killstream.observability import Metric, MetricUnit, logger, metrics
from killstream.package import Package
from killstream.poller.counts import TickCounts
from killstream.poller.cursor import CursorStore
from killstream.poller.sink import SendReport, SqsSink
from killstream.poller.sources.base import PollResult, Source
from killstream.poller.sources.r2z2 import R2Z2Source
from killstream.poller.sources.redisq import RedisQSource

FINISH_MARGIN = 0.5
"""Kept unused at the very end: returning the summary, and clock skew between us and Lambda."""

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
    "placeholders": Metric.PLACEHOLDER_PACKAGES,
    "updates_followed": Metric.UPDATE_POINTERS_FOLLOWED,
    "updates_expired": Metric.UPDATE_POINTERS_EXPIRED,
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
            cursor_store = CursorStore(aws_clients.client("ssm"), config.cursor_parameter, clock=clock, sleep=sleep)
        sqs = aws_clients.client("sqs")
        sink = SqsSink(sqs, config.queue_url, flush_within=source.flush_within, clock=clock, sleep=sleep)
        return cls(source, sink, cursor_store, gate, counts, budget_seconds=config.budget_seconds)

    @property
    def finish_reserve(self) -> float:
        """What ending a tick needs after its last request: the final SendMessageBatch, the
        cursor write (when there is a cursor), and the margin."""
        calls = 1 + (self.cursor_store is not None)
        return calls * self.sink.call_seconds + FINISH_MARGIN

    def tick(
        self, remaining_ms: Callable[[], int] | None = None, stop_requested: Callable[[], bool] | None = None
    ) -> dict:
        """Poll until the budget is spent, `stop_requested()` says so (the budget then ends at
        once; what must finish still does), or `remaining_ms()` (the Lambda context's
        get_remaining_time_in_millis) leaves too little to finish; returns the summary."""
        clock = self.gate.clock
        started = clock()
        budget_end = started + self.budget_seconds

        def remaining() -> float:
            return math.inf if remaining_ms is None else remaining_ms() / 1000

        limits = Limits(
            budget_end=lambda: -math.inf if stop_requested is not None and stop_requested() else budget_end,
            hard_end=lambda: clock() + remaining() - self.finish_reserve,
            new_work=self.source.new_work_seconds,
            finishing=self.source.finishing_seconds,
        )
        # Sends may go on until only the cursor write (and the margin) is left; the cursor to the end.
        keep_for_cursor = self.sink.call_seconds if self.cursor_store is not None else 0.0
        self.sink.time_left = lambda: remaining() - keep_for_cursor - FINISH_MARGIN
        if self.cursor_store is not None:
            self.cursor_store.time_left = lambda: remaining() - FINISH_MARGIN

        cursor = self.cursor_store.load() if self.cursor_store else None
        self._ledger = Ledger(cursor)
        self.counts.reset()
        requests_before = self.gate.started
        self.source.start(cursor)
        self.gate.begin(limits, self._before_sleep)
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
