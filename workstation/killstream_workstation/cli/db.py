"""`killstream db url`: where the local tools' PostgreSQL is, for psql and other clients."""

from __future__ import annotations

import argparse

from killstream_workstation.local.database import announce_to_stderr, database_url


def add_commands(subparsers) -> None:
    """Register `db` on the `killstream` command's subparsers."""
    db = subparsers.add_parser("db", help="the local tools' database: its URL (for psql)")
    actions = db.add_subparsers(dest="db_command", required=True, metavar="{url}")
    url = actions.add_parser(
        "url",
        help="print the URL the commands use: $DATABASE_URL, else the embedded server's (started if needed); "
        'psql "$(killstream db url)"',
    )
    url.set_defaults(func=cmd_url)


def cmd_url(args: argparse.Namespace) -> int:
    # only the URL on stdout, so $(killstream db url) is the URL; where the server is goes to stderr
    print(database_url(announce=announce_to_stderr))
    return 0
