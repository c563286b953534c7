"""Which PostgreSQL a workstation command uses — --database-url, else DATABASE_URL, else the
embedded server under .local/ (started if needed) — and migrating one over a connection of its own."""

from __future__ import annotations

import os
from pathlib import Path

from killstream.storage.connection import connect
from killstream.storage.migrations import migrate
from killstream_workstation.local.postgres import EmbeddedPostgres
from killstream_workstation.local.state import local_dir


def local_postgres_dir() -> Path:
    return local_dir() / "postgres"


def database_url(explicit: str | None = None) -> str:
    """--database-url, else DATABASE_URL, else the embedded server under .local/ (started if needed)."""
    url = explicit or os.environ.get("DATABASE_URL")
    if url:
        return url
    server = EmbeddedPostgres(local_postgres_dir()).start()
    print(f"PostgreSQL: embedded server, data in {server.data_dir}, listening on 127.0.0.1:{server.port}")
    return server.url


def migrate_database(dsn: str) -> list[str]:
    """`migrate` over a connection of its own; the versions it applied."""
    conn = connect(dsn)
    try:
        return migrate(conn)
    finally:
        conn.close()
