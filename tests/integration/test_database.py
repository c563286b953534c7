"""The fetcher's connection against a real PostgreSQL, with its credentials from DATABASE_URL or
from a Secrets Manager secret (moto over HTTP) whose password is rotated."""

from __future__ import annotations

import json
import os
import time
import uuid
from contextlib import closing, contextmanager
from urllib.parse import urlsplit

import boto3
import psycopg2
import pytest
from aws_lambda_powertools.utilities.parameters import SecretsProvider

from killstream.config import DB_STATEMENT_TIMEOUT_MS, FETCHER_TIMEOUT_SECONDS, DatabaseConfig
from killstream.errors import ConfigError, DatabaseUnavailable
from killstream.storage.connection import Database, connect
from killstream.storage.migrations import migration_files

needs_embedded_server = pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")), reason="stops or reconfigures the embedded server; DATABASE_URL is set"
)


def backend_pid(conn) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return cur.fetchone()[0]


def whoami(conn) -> str:
    with conn:
        with conn.cursor() as cur:
            cur.execute("SELECT current_user")
            return cur.fetchone()[0]


def terminate(admin_url: str, pid: int) -> None:
    with closing(psycopg2.connect(admin_url)) as admin:
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))


def url_config(url: str, **options) -> DatabaseConfig:
    return DatabaseConfig(database_url=url, secret_arn=None, sslmode=options.get("sslmode"), sslrootcert=None)


def test_the_connection_is_made_lazily_and_kept(database_url):
    opened = []

    def connect(*args, **kwargs):
        opened.append(args)
        return psycopg2.connect(*args, **kwargs)

    database = Database(url_config(database_url), connect=connect)
    assert opened == []
    first = database.run(backend_pid)
    second = database.run(backend_pid)
    assert first == second
    assert len(opened) == 1
    database.close()


def test_an_empty_database_gets_the_schema_on_first_use(fresh_database_url):
    database = Database(url_config(fresh_database_url))

    def tables(conn):
        with conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM schema_migrations")
            return cur.fetchone()[0]

    assert tables(database.connection()) == len(migration_files())
    database.close()


def test_a_broken_connection_is_replaced_and_the_operation_still_succeeds(database_url):
    database = Database(url_config(database_url))
    before = database.run(backend_pid)
    terminate(database_url, before)
    after = database.run(backend_pid)
    assert after != before
    database.close()


@needs_embedded_server
def test_an_unreachable_server_is_database_unavailable_until_it_is_back(database_url, postgres_server):
    database = Database(url_config(database_url))
    database.run(backend_pid)
    postgres_server.stop()
    try:
        with pytest.raises(DatabaseUnavailable):
            database.run(backend_pid)
        with pytest.raises(DatabaseUnavailable):  # and again, from a fresh connection attempt
            database.run(backend_pid)
    finally:
        postgres_server.start()
    assert database.run(backend_pid) > 0
    database.close()


def setting(conn, name: str) -> str:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT current_setting(%s)", (name,))
        return cur.fetchone()[0]


def test_connections_keep_alive_and_the_fetchers_cut_a_statement_before_its_timeout(database_url):
    """Item 14: a half-open connection after an RDS failover must fail fast, not eat the
    invocation: TCP keepalives and an unacknowledged-data limit on every connection, and on the
    fetcher's a statement_timeout well below the fetcher's own timeout."""
    with closing(connect(database_url)) as conn:
        parameters = conn.get_dsn_parameters()
        assert parameters["keepalives"] == "1"
        idle, interval, count = (int(parameters[f"keepalives_{k}"]) for k in ("idle", "interval", "count"))
        assert idle + interval * count < FETCHER_TIMEOUT_SECONDS
        assert 0 < int(parameters["tcp_user_timeout"]) < FETCHER_TIMEOUT_SECONDS * 1000
        assert setting(conn, "statement_timeout") == "0"  # the CLI's and migrations' own: unlimited
    assert 0 < DB_STATEMENT_TIMEOUT_MS < FETCHER_TIMEOUT_SECONDS * 1000
    database = Database(url_config(database_url))
    with database.connection().cursor() as cur:
        cur.execute("SELECT setting::int FROM pg_settings WHERE name = 'statement_timeout'")
        assert cur.fetchone()[0] == DB_STATEMENT_TIMEOUT_MS
    database.close()


def test_a_hung_statement_is_cut_and_the_connection_kept(database_url):
    """Item 14: a statement waiting on a lock (as one on a connection whose server is gone would
    wait) is cancelled at the statement timeout: an error of that batch, not an outage."""
    database = Database(url_config(database_url), statement_timeout_ms=300)
    pid = database.run(backend_pid)
    with closing(connect(database_url)) as holder:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE killmails IN ACCESS EXCLUSIVE MODE")  # held until rollback

        def blocked(conn):
            with conn, conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM killmails")
                return cur.fetchone()[0]

        began = time.monotonic()
        with pytest.raises(psycopg2.errors.QueryCanceled, match="statement timeout"):
            database.run(blocked)
        assert time.monotonic() - began < 10
        holder.rollback()
    assert database.run(backend_pid) == pid  # the same connection: nothing was lost
    database.close()


def test_sslmode_is_applied_to_the_connection(database_url):
    # The embedded server has no TLS: a connection that insists on it must be refused.
    database = Database(url_config(database_url, sslmode="require"))
    with pytest.raises(DatabaseUnavailable, match="SSL"):
        database.run(backend_pid)


# --- credentials from Secrets Manager --------------------------------------------------------


@contextmanager
def password_role(postgres_server, database_url):
    """A login role that must give its password (the embedded server trusts everyone else)."""
    role = f"ks_rotation_{uuid.uuid4().hex[:8]}"
    hba = postgres_server.data_dir / "pg_hba.conf"
    original = hba.read_text()
    with closing(psycopg2.connect(postgres_server.url)) as admin:
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'first-password'")
            _grant_schema_read(database_url, role, "GRANT SELECT ON schema_migrations TO")
            hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n" + original)
            cur.execute("SELECT pg_reload_conf()")
            try:
                yield role
            finally:
                hba.write_text(original)
                cur.execute("SELECT pg_reload_conf()")
                cur.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'")
                _grant_schema_read(database_url, role, "REVOKE SELECT ON schema_migrations FROM")
                cur.execute(f"DROP ROLE IF EXISTS {role}")


def _grant_schema_read(database_url: str, role: str, statement: str) -> None:
    """An application role reads schema_migrations (the fetcher checks the schema on connect)."""
    with closing(psycopg2.connect(database_url)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"{statement} {role}")


def secret_for(role: str, password: str, database_url: str, postgres_server, *, locates: bool = True) -> str:
    """An RDS-style secret; one that does not locate the database holds only the credentials."""
    secret = {"username": role, "password": password}
    if locates:
        secret |= {
            "engine": "postgres",
            "host": "127.0.0.1",
            "port": postgres_server.port,
            "dbname": database_url.rsplit("/", 1)[1],
        }
    return json.dumps(secret)


class RecordingSecrets:
    """Powertools' SecretsProvider (its cache included), noting every call's force_fetch."""

    def __init__(self):
        self.provider = SecretsProvider()
        self.force_fetches: list[bool] = []

    def __call__(self, name, **options):
        self.force_fetches.append(options.get("force_fetch", False))
        return self.provider.get(name, **options)


def secret_config(arn: str, sslmode: str | None = "disable", url: str | None = None) -> DatabaseConfig:
    return DatabaseConfig(database_url=url, secret_arn=arn, sslmode=sslmode, sslrootcert=None)


def location_only(database_url: str) -> str:
    """postgresql://host:port/dbname: where, not as whom (template.yaml's DATABASE_URL)."""
    return "postgresql://" + database_url.split("@", 1)[1]


@needs_embedded_server
@pytest.mark.parametrize("shape", ["secret locates", "url locates"])
def test_a_rotated_password_is_fetched_again_once_and_the_connection_made(aws, postgres_server, database_url, shape):
    client = boto3.client("secretsmanager")
    locates = shape == "secret locates"
    url = None if locates else location_only(database_url)
    with password_role(postgres_server, database_url) as role:
        arn = client.create_secret(
            Name="killstream/db",
            SecretString=secret_for(role, "first-password", database_url, postgres_server, locates=locates),
        )["ARN"]
        secrets = RecordingSecrets()
        database = Database(secret_config(arn, url=url), get_secret=secrets)
        assert database.run(whoami) == role
        # Rotation: the password changes in PostgreSQL and in the secret; our connection drops.
        with closing(psycopg2.connect(postgres_server.url)) as admin:
            admin.autocommit = True
            with admin.cursor() as cur:
                cur.execute(f"ALTER ROLE {role} PASSWORD 'second-password'")
        client.put_secret_value(
            SecretId=arn,
            SecretString=secret_for(role, "second-password", database_url, postgres_server, locates=locates),
        )
        terminate(postgres_server.url, database.run(backend_pid))
        assert database.run(whoami) == role
        # Second connect: the cached (old) password failed, so the secret was fetched again, once.
        assert secrets.force_fetches == [False, False, True]
        database.close()


@needs_embedded_server
def test_a_password_still_wrong_after_the_refetch_is_database_unavailable(aws, postgres_server, database_url):
    client = boto3.client("secretsmanager")
    with password_role(postgres_server, database_url) as role:
        arn = client.create_secret(
            Name="killstream/db", SecretString=secret_for(role, "wrong-password", database_url, postgres_server)
        )["ARN"]
        secrets = RecordingSecrets()
        database = Database(secret_config(arn), get_secret=secrets)
        with pytest.raises(DatabaseUnavailable, match="authentication failed"):
            database.run(whoami)
        assert secrets.force_fetches == [False, True]


def test_the_secret_path_insists_on_verified_tls_by_default(aws, database_url):
    client = boto3.client("secretsmanager")
    host, port = database_url.split("@", 1)[1].split("/", 1)[0].rsplit(":", 1)
    arn = client.create_secret(
        Name="killstream/db",
        SecretString=json.dumps(
            {
                "host": host,
                "port": int(port),
                "username": "postgres",
                "password": "x",
                "dbname": database_url.rsplit("/", 1)[1],
            }
        ),
    )["ARN"]
    config = DatabaseConfig.from_env({"DB_SECRET_ARN": arn})
    assert config.sslmode == "verify-full"
    with pytest.raises(DatabaseUnavailable, match="SSL"):
        Database(config, get_secret=SecretsProvider().get).run(whoami)


def test_a_missing_secret_is_database_unavailable(aws):
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:killstream/none-AbCdEf"
    with pytest.raises(DatabaseUnavailable, match="killstream/none"):
        Database(secret_config(arn), get_secret=SecretsProvider().get).run(whoami)


def test_a_secret_without_credentials_names_the_variable(aws):
    client = boto3.client("secretsmanager")
    arn = client.create_secret(Name="killstream/db", SecretString=json.dumps({"host": "127.0.0.1"}))["ARN"]
    with pytest.raises(ConfigError, match="DB_SECRET_ARN.*username, password"):
        Database(secret_config(arn), get_secret=SecretsProvider().get).run(whoami)


def test_a_secret_that_must_locate_the_database_needs_its_host(aws, database_url):
    client = boto3.client("secretsmanager")
    password = urlsplit(database_url).password or "unused-with-trust"
    arn = client.create_secret(
        Name="killstream/db", SecretString=json.dumps({"username": "postgres", "password": password})
    )["ARN"]
    with pytest.raises(ConfigError, match="DB_SECRET_ARN.*host"):
        Database(secret_config(arn), get_secret=SecretsProvider().get).run(whoami)
    # Once DATABASE_URL says where, the same secret is enough.
    database = Database(secret_config(arn, url=location_only(database_url)), get_secret=SecretsProvider().get)
    assert database.run(whoami) == "postgres"
    database.close()
