"""Shared fixtures: one throwaway PostgreSQL per test session (or $DATABASE_URL), and the
sample killmails: the real ones in ../shared/data/killmails/esi beside the checkout when it is
there (or wherever $KILLSTREAM_CORPUS points), else generated ones. Tests may read ../shared;
the product never does."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path

import psycopg2
import pytest

from killstream.storage.connection import connect
from killstream_workstation import corpus
from killstream_workstation.local.database import migrate_database
from killstream_workstation.local.postgres import EmbeddedPostgres

REAL_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "killmails" / "esi"
if REAL_CORPUS.is_dir():
    os.environ.setdefault(corpus.CORPUS_ENV, str(REAL_CORPUS))

_database_names = itertools.count()


@pytest.fixture(scope="session")
def postgres_server():
    """The embedded server, stopped and removed at the end of the session even on failure."""
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
    migrate_database(fresh_database_url)
    return fresh_database_url


@pytest.fixture
def conn(database_url):
    connection = connect(database_url)
    yield connection
    connection.close()


@pytest.fixture
def restore_environ():
    """The local pipeline (and `killstream alerts test --local`) point boto3 and the handlers at
    their endpoints through os.environ, as Lambda would; put everything back for the tests that
    follow."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


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
