"""What the benchmarks share: a private PostgreSQL (or $DATABASE_URL) with a fresh database, and
the sample killmails. The README's figures are on the real ones in ../shared/data/killmails/esi
beside the checkout, used when there (or wherever $KILLSTREAM_CORPUS points), else generated ones.
Run as scripts (python bench/NAME.py), the benchmarks find this module beside them."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import psycopg2

from killstream_workstation.corpus import CORPUS_ENV
from killstream_workstation.local.database import migrate_database
from killstream_workstation.local.postgres import EmbeddedPostgres

REAL_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "killmails" / "esi"


def use_real_corpus() -> None:
    """corpus.sample() gives the real killmails beside the checkout, when they are there."""
    if REAL_CORPUS.is_dir():
        os.environ.setdefault(CORPUS_ENV, str(REAL_CORPUS))


@contextlib.contextmanager
def postgres_server(*, durable: bool = True):
    """Yields an admin URL: $DATABASE_URL's server, else a private one with default
    durability (fsync on) removed afterwards."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    root = tempfile.mkdtemp(prefix="killstream-bench-")
    os.chmod(root, 0o755)
    server = EmbeddedPostgres(os.path.join(root, "data"), durable=durable).start()
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def create_database(admin_url: str, name: str, *, schema: bool = True) -> str:
    """A new database with the schema (or, `schema=False`, empty); returns its URL."""
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    if schema:
        migrate_database(url)
    return url


def fetcher_environment(database_url: str, esi_url: str, **more: str) -> None:
    """The fetcher handler's variables for a benchmark (a DLQ it never reaches, no EMF metrics)."""
    os.environ.update(
        {
            "ESI_URL": esi_url,
            "DATABASE_URL": database_url,
            "DLQ_URL": "http://127.0.0.1:9/000000000000/unused",
            "USER_AGENT": "killstream-bench/0.1 (b@example.com)",
            "AWS_DEFAULT_REGION": "us-east-1",
            "POWERTOOLS_METRICS_DISABLED": "true",
            **more,
        }
    )


@contextlib.contextmanager
def fresh_database(name: str, *, durable: bool = True):
    """Yields the URL of a new migrated database."""
    with postgres_server(durable=durable) as admin_url:
        yield create_database(admin_url, name)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)
