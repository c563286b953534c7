"""`killstream enrich`: name everything pending in the stored killmails from ESI, once — the same
enricher the deployed function runs every minute, without its 50 s budget."""

from __future__ import annotations

import argparse
import os

from killstream.config import EnricherConfig
from killstream.enrich.enricher import Enricher
from killstream.errors import DatabaseUnavailable
from killstream.observability import logger
from killstream_workstation.local.database import DatabaseProblem, database_url, migrate_database, url_origin

PLACEHOLDER_URL = "postgresql://127.0.0.1/postgres"
"""Stands in for the database URL while the other settings are checked (database_url() may start
the embedded server, which a bad setting should not)."""


def add_commands(subparsers) -> None:
    """Register `enrich` on the `killstream` command's subparsers."""
    enrich = subparsers.add_parser(
        "enrich", help="name every id pending in the stored killmails from ESI's universe routes, once"
    )
    enrich.add_argument("--database-url", help="default: $DATABASE_URL, else the embedded server")
    enrich.add_argument("--esi-url", help="default: $ESI_URL, else https://esi.evetech.net")
    enrich.add_argument("--user-agent", help="default: $USER_AGENT (ESI wants app/version (contact))")
    enrich.add_argument(
        "--from-start",
        action="store_true",
        help="check every stored killmail, not only those after the enricher's watermark (the catch-up)",
    )
    enrich.add_argument("--verbose", action="store_true", help="the enricher's log lines too")
    enrich.set_defaults(func=cmd_enrich)


def cmd_enrich(args: argparse.Namespace) -> int:
    env = {
        "ESI_URL": args.esi_url or os.environ.get("ESI_URL", ""),
        "USER_AGENT": args.user_agent or os.environ.get("USER_AGENT", ""),
    }
    # a bad value: main() prints it, naming the variable — checked before the embedded server starts
    EnricherConfig.from_env({**env, "DATABASE_URL": PLACEHOLDER_URL})
    url = database_url(args.database_url)
    config = EnricherConfig.from_env({**env, "DATABASE_URL": url})
    migrate_database(url, url_origin(args.database_url))  # out of reach: one line from main(), nothing asked
    level = logger.log_level
    if not args.verbose:
        logger.setLevel("WARNING")  # unresolvable ids and trouble only
    enricher = Enricher.from_config(config, budget=float("inf"))
    try:
        report = enricher.run(from_start=args.from_start)
    except DatabaseUnavailable as exc:  # lost mid-run: main() prints the one line, status 1
        raise DatabaseProblem(f"the database went away during the run ({exc}): run it again once it is back") from exc
    finally:
        enricher.database.close()
        logger.setLevel(level)
    esi = report.esi
    print(
        f"🏷️  {report.killmails:,} killmails read: {report.named:,} ids named, {report.unresolvable:,} unresolvable, "
        f"{report.pending:,} pending"
    )
    print(
        f"   ESI at {config.esi_url}: {esi['requests']:,} requests "
        f"({report.names_asked:,} ids sent to /universe/names/, {report.lookups:,} lookups), "
        f"{esi['errors']:,} errors, {esi['rate_limited']:,} rate-limited"
    )
    if report.stopped_because:
        print(f"   stopped early ({report.stopped_because}): {report.problem} — run it again later")
        return 1
    return 0
