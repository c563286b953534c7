"""Schema migrations: the SQL files under sql/ (package data), each applied once, in order,
recorded in schema_migrations."""

from __future__ import annotations

from importlib import resources

import psycopg2.extensions

MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
# Two migrators racing on one database: the loser waits instead of failing half-way.
MIGRATION_LOCK_KEY = 0x6B696C6C  # "kill"


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) for every migration shipped with the package, in order."""
    folder = resources.files("killstream.storage") / "sql"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text()) for f in files]


def applied_versions(conn: psycopg2.extensions.connection) -> set[str]:
    with conn:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
            exists = cur.fetchone()
            if not exists or not exists[0]:
                return set()
            cur.execute("SELECT version FROM schema_migrations")
            return {row[0] for row in cur.fetchall()}


def migrate(conn: psycopg2.extensions.connection) -> list[str]:
    """Apply the migrations not applied yet, each in its own transaction. Returns their versions.
    An up-to-date schema costs two reads and needs no DDL privilege (the fetcher checks on connect)."""
    if {version for version, _ in migration_files()} <= applied_versions(conn):
        return []
    applied_now = []
    with conn:
        with conn.cursor() as cur:
            # under the lock: two cold fetchers creating the table at once would collide
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            cur.execute(MIGRATIONS_TABLE)
    for version, sql in migration_files():
        with conn:  # one transaction per migration: all of it or none of it
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
                cur.execute("SELECT 1 FROM schema_migrations WHERE version = %s", (version,))
                if cur.fetchone():
                    continue
                cur.execute(sql)
                cur.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                applied_now.append(version)
    return applied_now
