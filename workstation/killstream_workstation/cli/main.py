"""The `killstream` command: migrate, run, stats, enrich, invoke, dlq, redrive, alerts."""

from __future__ import annotations

import argparse
import sys

from killstream.errors import ConfigError
from killstream.storage.connection import connect
from killstream_workstation.cli import alerts, dlq, enrich
from killstream_workstation.local.database import database_url, migrate_database
from killstream_workstation.local.invoke import add_invoke_arguments, invoke
from killstream_workstation.local.runner import add_run_arguments, run
from killstream_workstation.stats import database_report


def cmd_migrate(args: argparse.Namespace) -> int:
    applied = migrate_database(database_url(args.database_url))
    print(f"migrations applied: {', '.join(applied)}" if applied else "schema up to date: nothing to apply")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    conn = connect(database_url(args.database_url))
    try:
        print(database_report(conn))
    finally:
        conn.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="killstream", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    migrate = sub.add_parser("migrate", help="apply the schema migrations")
    migrate.add_argument("--database-url", help="default: $DATABASE_URL, else the embedded server")
    migrate.set_defaults(func=cmd_migrate)
    run_parser = sub.add_parser("run", help="the whole pipeline on this machine (live feed, or --replay [DIR] offline)")
    add_run_arguments(run_parser)
    run_parser.set_defaults(func=run)
    stats = sub.add_parser("stats", help="what the database holds: counts, newest killmail, ingest lag")
    stats.add_argument("--database-url", help="default: $DATABASE_URL, else the embedded server")
    stats.set_defaults(func=cmd_stats)
    invoke_parser = sub.add_parser(
        "invoke", help="run one handler on an event file against local endpoints (no Docker)"
    )
    add_invoke_arguments(invoke_parser)
    invoke_parser.set_defaults(func=invoke)
    enrich.add_commands(sub)
    dlq.add_commands(sub)
    alerts.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status: int = args.func(args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    sys.exit(main())
