"""Console output for `killstream run`, in the spirit of the original RedisQ worker:
one line per killmail, a periodic stats line, final statistics. It reads the same
structured log records the Lambdas write to CloudWatch, so what you see locally is
what the functions log in AWS."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

from killstream_workstation.names import NameBook, describe

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
    "victim_ship_type_id",
    "victim_character_id",
    "victim_corporation_id",
    "solar_system_id",
    "alert",
    "kind",
    "error_type",
}
ALERT_ICONS = {
    "posted": "🚨 Alert posted",
    "duplicate": "🚨 Alert already posted",
    "retry": "🚨 Alert not posted yet",
    "dead_lettered": "🚨 Alert dead-lettered",
}
_PLACE_KEYS = ("victim_ship_type_id", "victim_character_id", "victim_corporation_id", "solar_system_id")


def isk(value) -> str:
    if value is None:
        return "? ISK"
    value = float(value)
    for limit, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= limit:
            return f"{value / limit:.2f}{suffix} ISK"
    return f"{value:.0f} ISK"


FINAL_OUTCOMES = ("saved", "skipped", "updated")
"""A killmail with one of these outcomes is done with; a failure is done with only when it is
permanent (dead-lettered), not when it is handed back for another delivery."""
INVOCATION_FAILED = "invocation_failed"
"""The log key the local pipeline marks a failed Lambda invocation with (the function's name)."""


def plural(count: int, word: str, words: str | None = None) -> str:
    """`1 kill`, `2 kills`, `1,024 kills`."""
    return f"{count:,} {word if count == 1 else words or word + 's'}"


@dataclass
class RunStats:
    started: float = field(default_factory=time.monotonic)
    received: int = 0
    outcomes: Counter = field(default_factory=Counter)
    errors: int = 0
    """The feed's errors as the poller's ticks report them (`tick done ... errors=`), plus failed
    invocations, which end without a tick summary."""
    in_dlq: int = 0
    handled: set[int] = field(default_factory=set)
    """Killmails the fetcher is done with: stored, found stored already, updated, or dead-lettered."""
    alerts: Counter = field(default_factory=Counter)
    """The notifier's alerts by what became of them (posted, duplicate, retry, dead_lettered)."""
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
                f"   Failed: {o['failed']}",
                f"   Errors: {self.errors}",
                f"   In DLQ: {self.in_dlq}",
                *([f"   Alerts posted: {self.alerts['posted']}"] if self.alerts else []),
                f"   Runtime: {self.runtime:.0f} seconds",
            ]
        )


class StatsCounter(logging.Filter):
    """Counts, from the handlers' own log records, what the console and tests report:
    packages received, killmail outcomes, the ticks' errors. Filters nothing."""

    def __init__(self, stats: RunStats):
        super().__init__()
        self.stats = stats

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        outcome = fields.get("outcome")
        with self.stats.lock:
            if fields.get("alert") in ALERT_ICONS:
                self.stats.alerts[fields["alert"]] += 1
            elif outcome in ICONS:
                self.stats.outcomes[outcome] += 1
                killmail_id = fields.get("killmail_id")
                done = outcome in FINAL_OUTCOMES or (outcome == "failed" and fields.get("retry") is False)
                if done and isinstance(killmail_id, int):
                    self.stats.handled.add(killmail_id)
            elif record.msg == "package received":
                self.stats.received += 1
            elif record.msg == "tick done":
                errors = fields.get("errors")
                self.stats.errors += errors if isinstance(errors, int) else 0
            elif fields.get(INVOCATION_FAILED):
                self.stats.errors += 1
        return True


class ConsoleFormatter(LambdaPowertoolsFormatter):
    """Renders Powertools' JSON records as the worker's console lines and counts outcomes.
    A Powertools formatter itself, so Logger's append_keys and inject_lambda_context work.
    With a NameBook, a saved killmail's victim, ship and system are named where the names
    tables know them (the enricher names new ids a little later: until then, ids)."""

    def __init__(self, stats: RunStats, names: NameBook | None = None):
        super().__init__()
        self.stats = stats
        self.names = names

    def _place(self, doc: dict) -> str | None:
        if "victim_ship_type_id" not in doc:
            return None
        if self.names is not None:
            return self.names.describe(doc)
        ship, character, corporation, system = (doc.get(key) for key in _PLACE_KEYS)
        return describe(ship, character, corporation, system)

    def format(self, record: logging.LogRecord) -> str:
        doc = json.loads(super().format(record))
        outcome = doc.get("outcome")
        if outcome in ICONS:
            text = f"{ICONS[outcome]}: {doc.get('killmail_id')}"
            if outcome == "fetching":
                return f"{text} ({isk(doc.get('total_value'))})"
            if outcome == "saved":
                place = self._place(doc)
                value = isk(doc.get("total_value"))
                return (
                    f"{text} — {place}, {value} | {self.stats.line()}"
                    if place
                    else f"{text} ({value}) | {self.stats.line()}"
                )
            if outcome == "skipped":
                return f"{text} (already exists)"
            if outcome == "failed":
                return f"{text} ({doc.get('reason', 'unknown reason')})"
            return text
        if doc.get("alert") in ALERT_ICONS:
            text = f"{ALERT_ICONS[doc['alert']]}: {doc.get('killmail_id')} ({doc.get('kind')})"
            return f"{text} — {doc['reason']}" if doc.get("reason") else text
        if doc.get("message") == "enrichment done":
            return _enrichment_line(doc)
        extra = " ".join(
            f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in doc.items() if k not in _QUIET_KEYS
        )
        line = f"{doc.get('level', record.levelname):<7} {doc.get('message')}{'  ' + extra if extra else ''}"
        return f"{line}\n{doc['exception']}" if doc.get("exception") else line


def _count(doc: dict, key: str) -> int:
    value = doc.get(key)
    return value if isinstance(value, int) else 0


def _enrichment_line(doc: dict) -> str:
    line = (
        f"🏷️  Names: {_count(doc, 'named'):,} named, {_count(doc, 'unresolvable'):,} unresolvable, "
        f"{_count(doc, 'pending'):,} pending ({plural(_count(doc, 'requests'), 'ESI call')}, "
        f"{plural(_count(doc, 'killmails'), 'killmail')} read)"
    )
    return f"{line} — stopped: {doc['problem']}" if doc.get("stopped_because") else line


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
            or "alert" in record.__dict__
            or getattr(record, "msg", "") in ("tick done", "reconcile done", "enrichment done")
        )


def install(
    logger,
    stats: RunStats,
    *,
    verbose: bool = False,
    stream: TextIO | io.TextIOBase | None = None,
    names: NameBook | None = None,
) -> None:
    handler = logger.registered_handler
    handler.setFormatter(ConsoleFormatter(stats, names))
    handler.addFilter(QuietFilter(verbose))
    handler.setStream(stream or sys.stdout)


class ConsoleStream(io.TextIOBase):
    """The run's standard output. When its reader goes away (`killstream run … | head`), writing
    stops — the rest of the output goes to /dev/null — and `closed_by_reader` is set, so the run
    shuts its pipeline down instead of failing on every line."""

    def __init__(self, stream: TextIO, on_reader_gone: Callable[[], None] | None = None):
        super().__init__()
        self.stream = stream
        self.closed_by_reader = threading.Event()
        self._on_reader_gone = on_reader_gone or discard_stdout

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not self.closed_by_reader.is_set():
            try:
                self.stream.write(text)
                self.stream.flush()  # a line at a time: the console is read as it happens
            except BrokenPipeError:
                self._reader_gone()
        return len(text)

    def flush(self) -> None:
        if not self.closed_by_reader.is_set():
            try:
                self.stream.flush()
            except BrokenPipeError:
                self._reader_gone()

    def _reader_gone(self) -> None:
        self.closed_by_reader.set()
        self._on_reader_gone()


def discard_stdout() -> None:
    """Point file descriptor 1 at /dev/null: what is still buffered for a reader that went away
    (and the interpreter's last flush at exit) goes nowhere instead of raising BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.__stdout__.fileno() if sys.__stdout__ else 1)
        os.close(devnull)
    except (OSError, ValueError):
        pass
