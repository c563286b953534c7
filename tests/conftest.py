"""Shared fixtures: one throwaway PostgreSQL per test session (or $DATABASE_URL), and the
real killmail corpus from ../shared (tests that need it skip cleanly without it)."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile

import psycopg2
import pytest

from killstream.storage import migrations as db
from killstream_workstation import corpus

_database_names = itertools.count()


@pytest.fixture(scope="session")
def postgres_server():
    """The embedded server, stopped and removed at the end of the session even on failure."""
    from killstream_workstation.local.postgres import EmbeddedPostgres

    root = tempfile.mkdtemp(prefix="killstream-pg-")
    os.chmod(root, 0o755)
    server = EmbeddedPostgres(os.path.join(root, "data"), durable=False)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def _admin_url(request):
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    return request.getfixturevalue("postgres_server").url


@pytest.fixture
def fresh_database_url(_admin_url):
    """A new empty database (no schema) for this test."""
    name = f"ks_test_{os.getpid()}_{next(_database_names)}"
    conn = psycopg2.connect(_admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    base, _, _ = _admin_url.rpartition("/")
    yield f"{base}/{name}"
    conn = psycopg2.connect(_admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@pytest.fixture
def database_url(fresh_database_url):
    """A new database with the schema applied."""
    db.migrate_database(fresh_database_url)
    return fresh_database_url


@pytest.fixture
def conn(database_url):
    connection = db.connect(database_url)
    yield connection
    connection.close()


@pytest.fixture(scope="session")
def real_killmails():
    docs = corpus.load_real()
    if not docs:
        pytest.skip("the real killmail corpus (../shared/data/killmails/esi) is not here")
    return docs


@pytest.fixture(scope="session")
def sample_killmails():
    """Real killmails when present, else generated ones of the same shape."""
    return corpus.sample()
