"""What the benchmarks share: a private PostgreSQL (or $DATABASE_URL) with a fresh database."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import psycopg2

from killstream import db


@contextlib.contextmanager
def fresh_database(name: str, *, durable: bool = True):
    """Yields the URL of a new migrated database; on $DATABASE_URL's server when set."""
    server, root = None, None
    admin_url = os.environ.get("DATABASE_URL")
    if not admin_url:
        from killstream.local.postgres import EmbeddedPostgres

        root = tempfile.mkdtemp(prefix="killstream-bench-")
        os.chmod(root, 0o755)
        server = EmbeddedPostgres(os.path.join(root, "data"), durable=durable).start()
        admin_url = server.url
    try:
        conn = psycopg2.connect(admin_url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        url = admin_url.rsplit("/", 1)[0] + "/" + name
        conn = db.connect(url)
        db.migrate(conn)
        conn.close()
        yield url
    finally:
        if server:
            server.stop()
            shutil.rmtree(root, ignore_errors=True)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)
