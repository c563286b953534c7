"""`killstream reconcile`: the reconciler's core, on demand (docs/protocols.md, "R2Z2 history").

Against the deployed stack's database with QUEUE_URL set, the missing ones go onto the queue as
the Lambda would put them; without a queue, the few are fetched from ESI here, through the
fetcher's own core. With a `killstream run` up and nothing else said, its local stack is used.

Every setting is checked through the contract before anything starts (the embedded PostgreSQL
among them): a bad one is one line naming the variable and its flag, exit status 2, from the
command's error boundary (cli/main.py), as is a database out of reach (1)."""

from __future__ import annotations

import argparse
import os
from datetime import UTC, date, datetime

from killstream import __version__
from killstream.config import ReconcilerConfig
from killstream.errors import ConfigError, DatabaseUnavailable
from killstream.observability import metrics
from killstream.reconcile.reconciler import DayCheck, Reconciler, RunReport, Status, days_between, window
from killstream.reconcile.recovery import FetcherRecovery
from killstream.reconcile.store import ReconciliationStore
from killstream.storage.connection import connect
from killstream_workstation.cli.arguments import console_logging, day, positive
from killstream_workstation.local.aws import LOCAL_CREDENTIALS, REAL_CREDENTIALS
from killstream_workstation.local.database import DatabaseProblem, database_url, migrate_database, url_origin
from killstream_workstation.local.preflight import PLACEHOLDERS, ConfigProblem
from killstream_workstation.local.state import RunState, local_dir
from killstream_workstation.problems import UsageProblem

SHOWN_MISSING = 20
"""Missing killmails listed per incomplete day (the table has them all)."""
STACK_VARIABLES = {
    "queue_url": "QUEUE_URL",
    "dlq_url": "DLQ_URL",
    "history_url": "HISTORY_URL",
    "esi_url": "ESI_URL",
    "aws_endpoint_url": "AWS_ENDPOINT_URL",
    "user_agent": "USER_AGENT",
}
FLAGS = {
    "HISTORY_URL": "--history-url",
    "QUEUE_URL": "--queue-url",
    "RECONCILE_RAW_THRESHOLD": "--raw-threshold",
    "USER_AGENT": "--user-agent",
}
STACK_ORIGIN = "the running killstream run's stack"


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "reconcile",
        help="check UTC days against zKillboard's history and recover the killmails missing",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--days", type=positive, help="the last N complete UTC days (default $RECONCILE_DAYS, else 7)")
    parser.add_argument("--from", dest="first", type=day, metavar="YYYY-MM-DD", help="first day to check (UTC)")
    parser.add_argument("--to", dest="last", type=day, metavar="YYYY-MM-DD", help="last day (default: yesterday)")
    parser.add_argument("--dry-run", action="store_true", help="check and report; store, enqueue and record nothing")
    parser.add_argument("--database-url", help="default: $DATABASE_URL, else the local stack's or the embedded server")
    parser.add_argument("--history-url", help="default: $HISTORY_URL, else https://r2z2.zkillboard.com/history")
    parser.add_argument("--queue-url", help="recover through this killmail queue (default $QUEUE_URL; none: ESI here)")
    parser.add_argument("--raw-threshold", type=positive, help="default: $RECONCILE_RAW_THRESHOLD, else 500")
    parser.add_argument("--user-agent", help="default: $USER_AGENT; zKillboard and ESI need app/version (contact)")
    parser.add_argument("--verbose", action="store_true", help="every log line, not only killmails and problems")
    parser.set_defaults(func=cmd_reconcile)


def _environment(args: argparse.Namespace) -> tuple[dict[str, str], str]:
    """The configuration contract's variables — the flags over the environment over the local
    stack of a running `killstream run` (when there is one and no queue or history is named) —
    and where the database URL comes from. DATABASE_URL is left out when none is given: the
    embedded server's, once the settings are checked."""
    env = dict(os.environ)
    origin = url_origin(args.database_url)
    stack = RunState(local_dir()).running_stack()
    if stack and not (args.queue_url or args.history_url or env.get("QUEUE_URL") or env.get("HISTORY_URL")):
        print(f"Using the local stack of the running `killstream run`: queue {stack.get('queue_url')}")
        for key, variable in STACK_VARIABLES.items():
            if stack.get(key):
                env.setdefault(variable, stack[key])
        if env.get("AWS_ENDPOINT_URL") == stack.get("aws_endpoint_url"):
            # the local endpoint, as the run's functions reach it: its region, no real credentials
            env.update(LOCAL_CREDENTIALS)
            for name in REAL_CREDENTIALS:
                env.pop(name, None)
        if not (args.database_url or os.environ.get("DATABASE_URL", "").strip()) and stack.get("database_url"):
            env["DATABASE_URL"] = stack["database_url"]
            origin = STACK_ORIGIN
    for flag, variable in (
        (args.history_url, "HISTORY_URL"),
        (args.queue_url, "QUEUE_URL"),
        (args.raw_threshold, "RECONCILE_RAW_THRESHOLD"),
        (args.user_agent, "USER_AGENT"),
        (args.database_url, "DATABASE_URL"),
    ):
        if flag is not None:
            env[variable] = str(flag)
    env.setdefault("POWERTOOLS_METRICS_DISABLED", "true")  # the console says it all
    return env, origin


def _days(args: argparse.Namespace, config: ReconcilerConfig) -> list[date]:
    if args.last and not args.first:
        raise UsageProblem("--to needs --from (or --days N: the last N complete UTC days)")
    if args.days and args.first:
        raise UsageProblem("--days or --from/--to, not both")
    today = datetime.now(UTC).date()
    if not args.first:
        return window(args.days or config.days, today)
    days = days_between(args.first, args.last or today, today)
    if not days:
        raise UsageProblem(
            f"no complete UTC day from {args.first} to {args.last or today}: the last complete one is yesterday"
        )
    return days


def _config(env: dict[str, str]) -> ReconcilerConfig:
    try:
        return ReconcilerConfig.from_env(env)
    except ConfigError as error:
        raise ConfigProblem(error, FLAGS) from error


def cmd_reconcile(args: argparse.Namespace) -> int:
    env, origin = _environment(args)
    # every setting and day checked before the embedded server starts (database_url() may start
    # it; a stand-in URL meanwhile): a bad one is one line, status 2
    given = {name: value for name, value in env.items() if value.strip()}
    days = _days(args, _config({"DATABASE_URL": PLACEHOLDERS["DATABASE_URL"], **given}))
    if not env.get("DATABASE_URL", "").strip():
        env["DATABASE_URL"] = database_url(None)
    config = _config(env)
    aws = ("AWS_ENDPOINT_URL", "POWERTOOLS_METRICS_DISABLED", *LOCAL_CREDENTIALS, *REAL_CREDENTIALS)
    for name in aws:  # what boto3 reads from the process's environment
        if name in env:
            os.environ[name] = env[name]
        elif name in REAL_CREDENTIALS:
            os.environ.pop(name, None)
    applied = migrate_database(env["DATABASE_URL"], origin)  # out of reach: one line from main(), status 1
    if applied:
        print(f"Schema: applied {', '.join(applied)}")
    with console_logging(verbose=args.verbose):
        try:
            return _reconcile(config, days, env["DATABASE_URL"], dry_run=args.dry_run)
        except DatabaseUnavailable as exc:  # lost mid-run: main() prints the one line, status 1
            raise DatabaseProblem(
                f"the database went away during the run ({exc}): run it again once it is back"
            ) from exc


def _reconcile(config: ReconcilerConfig, days: list[date], url: str, *, dry_run: bool) -> int:
    reconciler = Reconciler.from_config(config)
    how = f"the queue {config.queue_url}" if config.queue_url else f"ESI ({config.esi_url}) from here"
    print(
        f"🔎 killstream {__version__}: {len(days)} day(s) {days[0]} .. {days[-1]} against {config.history_url}; "
        f"few missing through {how}, many from the raw file (≥ {config.raw_threshold})"
        + (" — dry run" if dry_run else "")
    )
    try:
        report = reconciler.run(days, dry_run=dry_run)
    finally:
        metrics.clear_metrics()
        reconciler.database.close()
    esi_requests = reconciler.few.esi_requests if isinstance(reconciler.few, FetcherRecovery) else 0
    print(render(report, _missing_for(url, report), esi_requests))
    failed = any(check.status in (Status.INCOMPLETE, Status.ERROR) for check in report.checks)
    return 1 if failed or report.not_checked else 0


def _missing_for(url: str, report: RunReport) -> dict[date, list]:
    """The recorded missing killmails of the days not complete (an unchanged day's are kept)."""
    days = [check.day for check in report.checks if check.status is not Status.COMPLETE]
    if report.dry_run or not days:
        return {check.day: check.missing_rows or [] for check in report.checks}
    conn = connect(url)
    try:
        store = ReconciliationStore(conn)
        return {day: store.missing("history", day) for day in days}
    finally:
        conn.close()


def render(report: RunReport, missing: dict[date, list], esi_requests: int = 0) -> str:
    header = (
        f"{'day':<10}  {'status':<10}  {'expected':>8}  {'listed':>7}  {'stored':>7}  {'missing':>7}  "
        f"{'recovered':>9}  {'queued':>6}  {'still':>5}  method"
    )
    lines = ["", header, "-" * len(header)]
    for check in report.checks:
        lines.append(_row(check))
    for check in report.checks:
        if check.errors:
            lines += [f"  {check.day}: {error}" for error in check.errors]
        rows = missing.get(check.day) or []
        for row in rows[:SHOWN_MISSING]:
            lines.append(f"  {check.day} missing {row.killmail_id}: {row.reason} — {row.detail or ''}".rstrip(" —"))
        if len(rows) > SHOWN_MISSING:
            lines.append(
                f"  {check.day}: … and {len(rows) - SHOWN_MISSING} more (SELECT * FROM reconciliation_missing)"
            )
    if report.not_checked:
        lines.append(f"not checked ({report.stopped_because}): {', '.join(f'{day}' for day in report.not_checked)}")
    summary = report.summary()
    lines.append(
        f"reconcile: days={summary['days_checked']} complete={summary['days_complete']} "
        f"incomplete={summary['days_incomplete']} missing={summary['killmails_missing']} "
        f"recovered={summary['killmails_recovered']} queued={summary['killmails_enqueued']} "
        f"still_missing={summary['still_missing']} requests={summary['requests']} downloads={summary['downloads']} "
        f"esi_requests={esi_requests}" + (" (dry run)" if report.dry_run else "")
    )
    return "\n".join(lines)


def _row(check: DayCheck) -> str:
    def number(value: int | None) -> str:
        return "-" if value is None else f"{value:,}"

    return (
        f"{check.day}  {check.status.value:<10}  {number(check.expected):>8}  {number(check.listed):>7}  "
        f"{number(check.stored):>7}  {number(check.missing):>7}  {number(check.recovered):>9}  "
        f"{number(check.enqueued):>6}  {number(check.still_missing):>5}  {check.method or '-'}"
    )
