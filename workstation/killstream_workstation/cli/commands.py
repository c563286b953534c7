"""The `killstream` command's parser and its small commands (migrate, stats); `run`, `invoke`,
`db`, `enrich`, `reconcile`, `backfill`, `dlq`, `redrive` and `alerts` register themselves from
their own modules. main.py runs it."""

from __future__ import annotations

import argparse
from typing import NoReturn

from killstream_workstation.cli import alerts, backfill, db, dlq, enrich, reconcile
from killstream_workstation.local.database import database_url, migrate_database, open_connection, url_origin
from killstream_workstation.local.invoke import add_invoke_arguments, invoke
from killstream_workstation.local.runner import add_run_arguments, run
from killstream_workstation.stats import database_report

DESCRIPTION = """The killstream command: the local pipeline (run), its database (migrate, stats, db url),
names for the stored ids from ESI (enrich), UTC days checked against zKillboard's history and
their missing killmails recovered (reconcile), history from the public archives (backfill), one
handler on an event file (invoke), the operator's DLQ tools (dlq, redrive), and testing an alert
rule's pattern (alerts test).

A failure is one line on stderr naming what is wrong and what to do. Exit status: 0 done (also
when the reader of the output went away, `… | head`), 1 something in the environment
(unreachable, busy, missing), 2 a bad input or setting, 130 interrupted (Ctrl+C)."""


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line that points at --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def cmd_migrate(args: argparse.Namespace) -> int:
    applied = migrate_database(database_url(args.database_url), url_origin(args.database_url))
    print(f"migrations applied: {', '.join(applied)}" if applied else "schema up to date: nothing to apply")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    conn = open_connection(database_url(args.database_url), url_origin(args.database_url))
    try:
        print(database_report(conn))
    finally:
        conn.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="killstream", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="a failure shows its traceback (also KILLSTREAM_DEBUG=1)")
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
    db.add_commands(sub)
    invoke_parser = sub.add_parser(
        "invoke", help="run one handler on an event file against local endpoints (no Docker)"
    )
    add_invoke_arguments(invoke_parser)
    invoke_parser.set_defaults(func=invoke)
    enrich.add_commands(sub)
    reconcile.add_commands(sub)
    backfill.add_commands(sub)
    dlq.add_commands(sub)
    alerts.add_commands(sub)
    for command in sub.choices.values():  # --debug after the subcommand too; SUPPRESS keeps the top one's value
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser
