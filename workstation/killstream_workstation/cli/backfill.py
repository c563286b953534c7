"""`killstream backfill`: every killmail of a range of UTC days from the public archives — EVE Ref's
daily archives (2007-12-05 on) or zKillboard's raw day files (2026-07-01 on) — into the database
(docs/protocols.md, "EVE Ref archives"). Days already complete are skipped without a download;
a run stopped part-way and started again finishes the range with nothing doubled. Each day's
result goes to the reconciler's table (`SELECT * FROM reconciliation WHERE source = 'everef'`).

--dry-run says what would be downloaded and roughly how much; --cloud starts the deployed stack's
backfill state machine instead and follows it (cli/backfill_cloud.py).

Every setting is checked through the contract before anything starts: a bad one is one line
naming the variable and its flag, exit status 2 (cli/main.py's error boundary)."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from datetime import UTC, date, datetime, timedelta
from typing import TextIO

from killstream import __version__
from killstream.backfill.archives import BYTES_PER_KILLMAIL, EVEREF, SOURCES, ZKILLBOARD
from killstream.backfill.days import Backfill, BackfillReport, DayResult, DayStatus, days_between
from killstream.backfill.plan import FIRST_DAY
from killstream.config import BackfillConfig
from killstream.errors import ConfigError, DatabaseUnavailable
from killstream.observability import logger
from killstream_workstation.cli.arguments import console_logging, day, positive
from killstream_workstation.local.database import DatabaseProblem, database_url, migrate_database, url_origin
from killstream_workstation.local.preflight import PLACEHOLDERS, ConfigProblem
from killstream_workstation.problems import UsageProblem

MAX_PARALLEL = 8
DEFAULT_PARALLEL = 2
"""Days downloaded at once: modest, for donated services."""
FLAGS = {
    "EVEREF_URL": "--everef-url",
    "HISTORY_URL": "--history-url",
    "USER_AGENT": "--user-agent",
    "DATABASE_URL": "--database-url",
}
SHOWN_DAYS = 40
"""Days listed one by one in the summary; past that, only those not complete."""


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "backfill",
        help="store every killmail of a range of UTC days from EVE Ref's (or zKillboard's) archives",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--from", dest="first", type=day, metavar="YYYY-MM-DD", required=True, help="first UTC day")
    parser.add_argument("--to", dest="last", type=day, metavar="YYYY-MM-DD", help="last UTC day (default: yesterday)")
    parser.add_argument("--source", choices=SOURCES, default=EVEREF, help="the archive (default: everef)")
    parser.add_argument(
        "--parallel",
        type=positive,
        default=DEFAULT_PARALLEL,
        help=f"days at once, 1..{MAX_PARALLEL} (default {DEFAULT_PARALLEL}: these are donated services)",
    )
    parser.add_argument("--database-url", help="default: $DATABASE_URL, else the embedded server")
    parser.add_argument("--everef-url", help="default: $EVEREF_URL, else https://data.everef.net/killmails")
    parser.add_argument("--history-url", help="default: $HISTORY_URL, else https://r2z2.zkillboard.com/history")
    parser.add_argument("--user-agent", help="default: $USER_AGENT; app/version (contact)")
    parser.add_argument(
        "--dry-run", action="store_true", help="say what would be downloaded and how much; store nothing"
    )
    parser.add_argument("--cloud", action="store_true", help="run it as the deployed stack's state machine instead")
    parser.add_argument("--stack-name", help="with --cloud: the stack (default $KILLSTREAM_STACK, else killstream-dev)")
    parser.add_argument("--state-machine-arn", help="with --cloud: the state machine (default: the stack's output)")
    parser.add_argument("--no-wait", action="store_true", help="with --cloud: start it and return")
    parser.add_argument("--verbose", action="store_true", help="every log line, not only problems")
    parser.set_defaults(func=cmd_backfill)


def days_asked(first: date, last: date | None, source: str, today: date) -> list[date]:
    """The range, checked: never today or later (its archive is not written yet), never before
    the archive's first day."""
    yesterday = today - timedelta(days=1)
    for flag, value in (("--from", first), ("--to", last)):
        if value is not None and value > yesterday:
            raise UsageProblem(
                f"{flag} {value}: the last complete UTC day is {yesterday} (today's archive is not written)"
            )
    last = last or yesterday
    if first > last:
        raise UsageProblem(f"--from {first} is after --to {last}")
    if first < FIRST_DAY[source]:
        hint = " (use --source everef for earlier days)" if source == ZKILLBOARD else ""
        raise UsageProblem(f"--from {first}: {source}'s archive begins on {FIRST_DAY[source]}{hint}")
    return days_between(first, last)


def _environment(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    for flag, variable in (
        (args.everef_url, "EVEREF_URL"),
        (args.history_url, "HISTORY_URL"),
        (args.user_agent, "USER_AGENT"),
        (args.database_url, "DATABASE_URL"),
    ):
        if flag is not None:
            env[variable] = flag
    env.setdefault("POWERTOOLS_METRICS_DISABLED", "true")  # the console says it all
    return env


def _config(env: dict[str, str]) -> BackfillConfig:
    try:
        return BackfillConfig.from_env(env)
    except ConfigError as error:
        raise ConfigProblem(error, FLAGS) from error


def cmd_backfill(args: argparse.Namespace) -> int:
    if args.parallel > MAX_PARALLEL:
        raise UsageProblem(f"--parallel {args.parallel}: at most {MAX_PARALLEL} (these are donated services)")
    days = days_asked(args.first, args.last, args.source, datetime.now(UTC).date())
    if args.cloud:
        from killstream_workstation.cli.backfill_cloud import run_in_cloud

        return run_in_cloud(args, days)
    env = _environment(args)
    given = {name: value for name, value in env.items() if value.strip()}
    _config({"DATABASE_URL": PLACEHOLDERS["DATABASE_URL"], **given})  # checked before the embedded server starts
    origin = url_origin(args.database_url)
    if not env.get("DATABASE_URL", "").strip():
        env["DATABASE_URL"] = database_url(None)
    config = _config(env)
    applied = migrate_database(env["DATABASE_URL"], origin)  # out of reach: one line from main(), status 1
    if applied:
        print(f"Schema: applied {', '.join(applied)}")
    url = config.everef_url if args.source == EVEREF else config.history_url
    backfill = Backfill.from_config(config, args.source, parallel=args.parallel)
    try:
        with console_logging(verbose=args.verbose):
            if args.dry_run:
                print(dry_run(backfill, days, url))
                return 0
            print(
                f"📦 killstream {__version__}: backfill {len(days)} day(s) {days[0]} .. {days[-1]} from {url}, "
                f"{args.parallel} at a time"
            )
            progress = Progress(len(days), sys.stderr)
            handler = logger.registered_handler
            handler.addFilter(progress.before_log_line)
            try:
                report = backfill.run(days, on_day=progress.day_done, on_progress=progress.parsed)
            except DatabaseUnavailable as exc:
                raise DatabaseProblem(
                    f"the database went away during the run ({exc}): run it again once it is back; "
                    "what was stored stays, and the days done are skipped"
                ) from exc
            finally:
                handler.removeFilter(progress.before_log_line)
            progress.finish()
    finally:
        backfill.close()
    print(render(report, args.source))
    return 0 if not report.failed_days and not report.not_done else 1


def dry_run(backfill: Backfill, days: list[date], url: str) -> str:
    """What a run would download, and roughly how much: from the archive's totals and what is stored."""
    totals, problem, stored = backfill.plan(days)
    wanted, killmails, unknown = [], 0, 0
    for one in days:
        count, _ = stored.get(one, (0, None))
        expected = None if totals is None else totals.get(one)
        if expected is not None and count >= expected:
            continue
        wanted.append(one)
        if expected is None:
            unknown += 1
        else:
            killmails += expected - count
    size = sum((totals or {}).get(one, 0) for one in wanted) * BYTES_PER_KILLMAIL[backfill.source]
    lines = [f"dry run: {len(days)} day(s) {days[0]} .. {days[-1]} from {url}"]
    if problem:
        lines.append(f"  the archive's totals could not be read ({problem}): every day would be downloaded")
    lines.append(
        f"  would download {len(wanted)} day(s) (~{size / 1e6:,.0f} MB), "
        f"about {killmails:,} killmail(s) not stored yet; "
        f"{len(days) - len(wanted)} day(s) complete already"
        + (f"; {unknown} day(s) not in the totals (downloaded to find out)" if unknown else "")
    )
    if wanted:
        shown = ", ".join(f"{one}" for one in wanted[:SHOWN_DAYS]) + (" …" if len(wanted) > SHOWN_DAYS else "")
        lines.append(f"  days: {shown}")
    return "\n".join(lines)


class Progress:
    """days done / total, killmails/s, ETA: one line rewritten on a terminal, a line per day elsewhere."""

    def __init__(self, total: int, stream: TextIO, clock=time.monotonic):
        self.total = total
        self.stream = stream
        self.clock = clock
        self.started = clock()
        self.done = 0
        self.failed = 0
        self.killmails = 0
        self.tty = stream.isatty()
        self._lock = threading.Lock()

    def parsed(self, killmails: int) -> None:
        with self._lock:
            self.killmails += killmails
            if self.tty:
                self._show(None)

    def day_done(self, result: DayResult) -> None:
        with self._lock:
            self.done += 1
            self.failed += result.status is not DayStatus.COMPLETE
            self._show(result)

    def line(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        rate = self.killmails / elapsed
        eta = "-" if not self.done else _duration(elapsed / self.done * (self.total - self.done))
        failed = f", {self.failed} not complete" if self.failed else ""
        return (
            f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} days{failed}  "
            f"{self.killmails:,} killmails  {rate:,.0f}/s  ETA {eta}"
        )

    def _show(self, result: DayResult | None) -> None:
        if self.tty:
            self.stream.write("\r" + self.line() + "\033[K")
        elif result is not None:
            self.stream.write(f"{self.line()}  ({result.day}: {result.status.value})\n")
        self.stream.flush()

    def before_log_line(self, record: object) -> bool:
        """A logging filter: a line logged while the bar is shown starts on a clean line (the bar
        is drawn again at the next update). Lets every record through."""
        if self.tty:
            with self._lock:
                self.stream.write("\r\033[K")
                self.stream.flush()
        return True

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def render(report: BackfillReport, source: str) -> str:
    header = f"{'day':<10}  {'status':<10}  {'expected':>8}  {'stored':>7}  {'new':>6}  {'had':>6}  {'errors':>6}"
    lines = ["", header, "-" * len(header)]
    shown = report.days if len(report.days) <= SHOWN_DAYS else report.failed_days
    for result in shown:
        expected = "-" if result.expected is None else f"{result.expected:,}"
        status = "skipped" if result.skipped else result.status.value
        lines.append(
            f"{result.day}  {status:<10}  {expected:>8}  {result.stored:>7,}  {result.inserted:>6,}  "
            f"{result.already_stored:>6,}  {len(result.failed) + len(result.unnamed):>6}"
        )
    if len(shown) < len(report.days):
        lines.append(f"… {len(report.days) - len(shown)} more day(s), all complete")
    for result in report.failed_days:
        if result.error:
            lines.append(f"  {result.day}: {result.error}")
        for row in result.failed[:5]:
            lines.append(f"  {result.day} killmail {row.killmail_id}: {row.reason} — {row.detail or ''}")
        if len(result.failed) > 5:
            lines.append(f"  {result.day}: … and {len(result.failed) - 5} more (SELECT * FROM reconciliation_missing)")
    if report.not_done:
        lines.append(f"not started ({report.stopped_because}): {', '.join(f'{one}' for one in report.not_done)}")
    summary = report.summary()
    lines.append(
        f"backfill: source={source} days={summary['days']} complete={summary['days_complete']} "
        f"skipped={summary['days_skipped']} failed={summary['days_failed']} "
        f"killmails_new={summary['killmails_inserted']} already_stored={summary['killmails_already_stored']} "
        f"killmail_errors={summary['killmail_errors']} downloads={summary['downloads']} "
        f"seconds={summary['seconds']:.1f} killmails_per_s={summary['killmails_per_second']:.0f}"
    )
    return "\n".join(lines)
