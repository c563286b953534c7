"""How every PostgreSQL connection is opened (`connect`), and the fetcher's kept connection
(`Database`): made on first use, kept across invocations (a warm
Lambda container reuses it), replaced when it breaks.

Where and as whom:
- DATABASE_URL alone (local, tests): everything is in the URL;
- DB_SECRET_ARN alone: the Secrets Manager secret holds host, port, username, password, dbname;
- both (template.yaml's shape): the URL says where (host, port, dbname, no credentials) and the
  secret holds username and password — all an RDS-managed master secret holds.
The secret is read through Powertools Parameters, cached. A rotated password shows up as an
authentication failure: the secret is then fetched again, once, bypassing the cache."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import psycopg2
import psycopg2.extensions
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError, TransformParameterError

from killstream.config import DB_KEEPALIVES, DB_STATEMENT_TIMEOUT_MS, DB_TCP_USER_TIMEOUT_MS, DatabaseConfig
from killstream.errors import ConfigError, DatabaseUnavailable
from killstream.observability import logger
from killstream.storage.migrations import migrate

T = TypeVar("T")
SECRET_MAX_AGE_SECONDS = 300
# OperationalError covers a server that is down, unreachable, restarting or refusing us;
# InterfaceError a connection psycopg2 already knows is closed. Not every OperationalError is a
# lost connection, though (see connection_lost).
CONNECTION_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)
# SQLSTATEs that end the session: connection exceptions (class 08) and the server going away.
_SESSION_ENDED = ("57P01", "57P02", "57P03")


def connection_lost(exc: BaseException, conn: psycopg2.extensions.connection | None) -> bool:
    """Whether `exc` means the connection is gone, not that one statement failed on it. psycopg2
    raises OperationalError for both: a server gone, and a statement cancelled (a statement
    timeout, or the COPY it aborted because the client could not encode a row) on a connection
    that is fine and must not be mistaken for an outage."""
    if not isinstance(exc, CONNECTION_ERRORS):
        return False
    if isinstance(exc, psycopg2.InterfaceError) or conn is None or conn.closed:
        return True
    code = getattr(exc, "pgcode", None) or ""
    return code.startswith("08") or code in _SESSION_ENDED


def connect(dsn: str, **kwargs: Any) -> psycopg2.extensions.connection:
    """Every connection: a connect timeout, TCP keepalives and a limit on unacknowledged data, so
    a connection whose server is gone fails within seconds rather than at the kernel's ~15 min."""
    kwargs.setdefault("connect_timeout", 5)
    kwargs.setdefault("application_name", "killstream")
    for name, value in DB_KEEPALIVES.items():
        kwargs.setdefault(name, value)
    kwargs.setdefault("tcp_user_timeout", DB_TCP_USER_TIMEOUT_MS)
    return psycopg2.connect(dsn, **kwargs)


def _is_authentication_failure(exc: psycopg2.OperationalError) -> bool:
    # libpq reports a failed login at connect time as text only (no SQLSTATE on the exception).
    return exc.pgcode == "28P01" or "authentication failed" in str(exc)


class Database:
    """`run(operation)` calls `operation(connection)` on the kept connection. A kept connection
    found broken is replaced and the operation tried once more on the new one (the operation
    must be one transaction, so a failed attempt left nothing behind). Its statements are cut at
    `statement_timeout_ms` (derived from the fetcher's timeout in killstream.config)."""

    def __init__(
        self,
        config: DatabaseConfig,
        *,
        get_secret: Callable[..., Any] = parameters.get_secret,
        connect: Callable[..., psycopg2.extensions.connection] = connect,
        secret_max_age: int = SECRET_MAX_AGE_SECONDS,
        statement_timeout_ms: int = DB_STATEMENT_TIMEOUT_MS,
    ):
        self.config = config
        self.statement_timeout_ms = statement_timeout_ms
        self._get_secret = get_secret
        self._connect = connect
        self._secret_max_age = secret_max_age
        self._conn: psycopg2.extensions.connection | None = None
        self._schema_ready = False

    def run(self, operation: Callable[[psycopg2.extensions.connection], T]) -> T:
        """A statement that fails on a sound connection raises its own psycopg2 error."""
        kept = self._conn is not None and not self._conn.closed
        try:
            return operation(self.connection())
        except CONNECTION_ERRORS as exc:
            if not connection_lost(exc, self._conn):
                raise
            self.close()
            if not kept:
                raise DatabaseUnavailable(f"PostgreSQL: {_first_line(exc)}") from exc
        try:
            return operation(self.connection())
        except CONNECTION_ERRORS as exc:
            if not connection_lost(exc, self._conn):
                raise
            self.close()
            raise DatabaseUnavailable(f"PostgreSQL: {_first_line(exc)}") from exc

    def connection(self) -> psycopg2.extensions.connection:
        if self._conn is None or self._conn.closed:
            conn = self._open()
            if not self._schema_ready:
                # A new deployment's database is empty and private to the VPC: the first
                # connection brings the schema up to date (idempotent, serialized by a lock).
                try:
                    applied = migrate(conn)
                except BaseException:
                    conn.close()
                    raise
                if applied:
                    logger.info("schema migrations applied", extra={"versions": applied})
                self._schema_ready = True
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def _options(self) -> dict[str, str]:
        """TLS, and the session's statement timeout (libpq's `options`), for every connect."""
        tls = {"options": f"-c statement_timeout={self.statement_timeout_ms}"}
        if self.config.sslmode:
            tls["sslmode"] = self.config.sslmode
        if self.config.sslrootcert:
            tls["sslrootcert"] = self.config.sslrootcert
        return tls

    def _open(self) -> psycopg2.extensions.connection:
        dsn = self.config.database_url or ""
        if not self.config.secret_arn:
            return self._connect(dsn, **self._options())
        try:
            return self._connect(dsn, **self._secret_credentials(force_fetch=False), **self._options())
        except psycopg2.OperationalError as exc:
            if not _is_authentication_failure(exc):
                raise
        return self._connect(dsn, **self._secret_credentials(force_fetch=True), **self._options())

    def _secret_credentials(self, *, force_fetch: bool) -> dict[str, Any]:
        try:
            secret = self._get_secret(
                self.config.secret_arn, transform="json", force_fetch=force_fetch, max_age=self._secret_max_age
            )
        except (GetParameterError, TransformParameterError) as exc:
            raise DatabaseUnavailable(f"secret {self.config.secret_arn}: {exc}") from exc
        if not isinstance(secret, dict):
            raise ConfigError("DB_SECRET_ARN", "the secret is not a JSON object")
        locates = not self.config.database_url
        required = ("host", "username", "password") if locates else ("username", "password")
        missing = [key for key in required if not secret.get(key)]
        if missing:
            raise ConfigError("DB_SECRET_ARN", f"the secret lacks {', '.join(missing)}")
        credentials = {"user": secret["username"], "password": secret["password"]}
        if locates:
            credentials |= {
                "host": secret["host"],
                "port": int(secret.get("port") or 5432),
                "dbname": secret.get("dbname") or "postgres",
            }
        return credentials


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
