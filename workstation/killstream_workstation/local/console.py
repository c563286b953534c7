"""Console output for `killstream run`, in the spirit of the original RedisQ worker:
one line per killmail, a periodic stats line, final statistics. It reads the same
structured log records the Lambdas write to CloudWatch, so what you see locally is
what the functions log in AWS."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

ICONS = {
    "fetching": "📥 Fetching",
    "saved": "✅ Saved",
    "skipped": "⏭️  Skipped",
    "updated": "🔁 Updated",
    "failed": "❌ Failed",
}
_QUIET_KEYS = {
    "level",
    "location",
    "message",
    "timestamp",
    "service",
    "cold_start",
    "function_name",
    "function_memory_size",
    "function_arn",
    "function_request_id",
    "xray_trace_id",
    "sampling_rate",
    "outcome",
    "killmail_id",
    "total_value",
    "reason",
    "exception",
    "exception_name",
    "stack_trace",
}


def isk(value) -> str:
    if value is None:
        return "? ISK"
    value = float(value)
    for limit, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= limit:
            return f"{value / limit:.2f}{suffix} ISK"
    return f"{value:.0f} ISK"


@dataclass
class RunStats:
    started: float = field(default_factory=time.monotonic)
    received: int = 0
    outcomes: Counter = field(default_factory=Counter)
    errors: int = 0
    in_dlq: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def runtime(self) -> float:
        return time.monotonic() - self.started

    def line(self) -> str:
        o = self.outcomes
        return (
            f"Stats: {self.received} received, {o['saved']} saved, {o['skipped']} skipped, "
            f"{o['updated']} updated, {o['failed']} failed, {self.errors} errors, {self.in_dlq} in DLQ "
            f"({self.runtime:.0f}s runtime)"
        )

    def final(self) -> str:
        o = self.outcomes
        return "\n".join(
            [
                "📊 Final Statistics:",
                f"   Received: {self.received}",
                f"   Saved: {o['saved']}",
                f"   Skipped: {o['skipped']}",
                f"   Updated: {o['updated']}",
                f"   Errors: {self.errors + o['failed']}",
                f"   In DLQ: {self.in_dlq}",
                f"   Runtime: {self.runtime:.0f} seconds",
            ]
        )


class StatsCounter(logging.Filter):
    """Counts, from the handlers' own log records, what the console and tests report:
    packages received, killmail outcomes, errors. Filters nothing."""

    def __init__(self, stats: RunStats):
        super().__init__()
        self.stats = stats

    def filter(self, record: logging.LogRecord) -> bool:
        outcome = record.__dict__.get("outcome")
        with self.stats.lock:
            if outcome in ICONS:
                self.stats.outcomes[outcome] += 1
            elif record.msg == "package received":
                self.stats.received += 1
            elif record.levelno >= logging.ERROR:
                self.stats.errors += 1
        return True


class ConsoleFormatter(LambdaPowertoolsFormatter):
    """Renders Powertools' JSON records as the worker's console lines and counts outcomes.
    A Powertools formatter itself, so Logger's append_keys and inject_lambda_context work."""

    def __init__(self, stats: RunStats):
        super().__init__()
        self.stats = stats

    def format(self, record: logging.LogRecord) -> str:
        doc = json.loads(super().format(record))
        outcome = doc.get("outcome")
        if outcome in ICONS:
            text = f"{ICONS[outcome]}: {doc.get('killmail_id')}"
            if outcome == "fetching":
                return f"{text} ({isk(doc.get('total_value'))})"
            if outcome == "saved":
                return f"{text} ({isk(doc.get('total_value'))}) | {self.stats.line()}"
            if outcome == "skipped":
                return f"{text} (already exists)"
            if outcome == "failed":
                return f"{text} ({doc.get('reason', 'unknown reason')})"
            return text
        extra = " ".join(
            f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in doc.items() if k not in _QUIET_KEYS
        )
        line = f"{doc.get('level', record.levelname):<7} {doc.get('message')}{'  ' + extra if extra else ''}"
        return f"{line}\n{doc['exception']}" if doc.get("exception") else line


class QuietFilter(logging.Filter):
    """Below WARNING only per-killmail lines reach the console unless --verbose."""

    def __init__(self, verbose: bool):
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        return (
            self.verbose
            or record.levelno >= logging.WARNING
            or "outcome" in record.__dict__
            or getattr(record, "msg", "") in ("tick done", "reconcile done")
        )


def install(logger, stats: RunStats, *, verbose: bool = False) -> None:
    handler = logger.registered_handler
    handler.setFormatter(ConsoleFormatter(stats))
    handler.addFilter(QuietFilter(verbose))
    handler.setStream(sys.stdout)
