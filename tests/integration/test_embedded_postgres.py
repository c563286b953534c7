"""The private PostgreSQL: TCP logins need its generated password."""

import os

import psycopg2
import pytest


def test_tcp_logins_need_the_generated_password(postgres_server):
    if os.environ.get("DATABASE_URL"):
        pytest.skip("tests use the server at DATABASE_URL")
    assert oct(postgres_server.password_file.stat().st_mode & 0o777) == "0o600"
    with psycopg2.connect(postgres_server.url) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    with pytest.raises(psycopg2.OperationalError, match="password"):
        psycopg2.connect(f"postgresql://postgres@127.0.0.1:{postgres_server.port}/postgres", connect_timeout=5)
