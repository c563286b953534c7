"""The `killstream` command: migrate, run, stats, invoke, dlq, redrive."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from killstream.config import ConfigError


def local_postgres_dir() -> Path:
    return Path(os.environ.get("KILLSTREAM_LOCAL_DIR", ".local")) / "postgres"


def database_url(explicit: str | None = None) -> str:
    """--database-url, else DATABASE_URL, else the embedded server under .local/ (started if needed)."""
    url = explicit or os.environ.get("DATABASE_URL")
    if url:
        return url
    from killstream_workstation.local.postgres import EmbeddedPostgres

    server = EmbeddedPostgres(local_postgres_dir()).start()
    print(f"PostgreSQL: embedded server, data in {server.data_dir}, listening on 127.0.0.1:{server.port}")
    return server.url


def cmd_migrate(args: argparse.Namespace) -> int:
    from killstream.storage import migrations as db

    applied = db.migrate_database(database_url(args.database_url))
    print(f"migrations applied: {', '.join(applied)}" if applied else "schema up to date: nothing to apply")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from killstream_workstation.local.runner import run

    return run(args)


def cmd_stats(args: argparse.Namespace) -> int:
    from killstream.storage import migrations as db
    from killstream_workstation.stats import database_report

    conn = db.connect(database_url(args.database_url))
    try:
        print(database_report(conn))
    finally:
        conn.close()
    return 0


def cmd_invoke(args: argparse.Namespace) -> int:
    from killstream_workstation.local.invoke import invoke

    return invoke(args)


def build_parser() -> argparse.ArgumentParser:
    from killstream_workstation.dlq import inspect as dlq
    from killstream_workstation.local.invoke import add_invoke_arguments
    from killstream_workstation.local.runner import add_run_arguments

    parser = argparse.ArgumentParser(prog="killstream", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    migrate = sub.add_parser("migrate", help="apply the schema migrations")
    migrate.add_argument("--database-url", help="default: $DATABASE_URL, else the embedded server")
    migrate.set_defaults(func=cmd_migrate)
    run = sub.add_parser("run", help="the whole pipeline on this machine (live feed, or --replay DIR offline)")
    add_run_arguments(run)
    run.set_defaults(func=cmd_run)
    stats = sub.add_parser("stats", help="what the database holds: counts, newest killmail, ingest lag")
    stats.add_argument("--database-url", help="default: $DATABASE_URL, else the embedded server")
    stats.set_defaults(func=cmd_stats)
    invoke = sub.add_parser("invoke", help="run one handler on an event file against local endpoints (no Docker)")
    add_invoke_arguments(invoke)
    invoke.set_defaults(func=cmd_invoke)
    dlq.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
