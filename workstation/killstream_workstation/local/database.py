"""Which PostgreSQL a workstation command uses — --database-url, else DATABASE_URL, else the
embedded server under the local directory (started if needed, always on the same address) — and
migrating one over a connection of its own. A database that cannot be reached, or a URL that is
not one, is a DatabaseProblem: one line naming the address and what to do."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg2
import psycopg2.extensions

from killstream.storage.connection import connect
from killstream.storage.migrations import migrate
from killstream_workstation.local.postgres import EmbeddedPostgres
from killstream_workstation.local.state import local_dir
from killstream_workstation.problems import Problem, UsageProblem

DEFAULT_LOCAL_PORT = 55432
"""Where the embedded server listens unless something else already does: far from 5432, so a
PostgreSQL of the machine's own is left alone, and below the ephemeral range clients are given."""
URL_SHAPE = "postgresql://USER:PASSWORD@HOST:PORT/DBNAME"


def local_postgres_dir() -> Path:
    return local_dir() / "postgres"


def local_server(root: Path | None = None) -> EmbeddedPostgres:
    """The embedded server of the local directory (`root` / its data, default local_dir()),
    not started: on its remembered port, first DEFAULT_LOCAL_PORT."""
    data_dir = (root / "postgres") if root is not None else local_postgres_dir()
    return EmbeddedPostgres(data_dir, port=DEFAULT_LOCAL_PORT, remember_port=True)


def start_local_server(
    root: Path | None = None, announce: Callable[[str], None] = lambda line: print(line)
) -> EmbeddedPostgres:
    """The embedded server, started if it is not running; `announce` gets one line saying where."""
    server = local_server(root).start()
    moved = f" ({server.moved_from} was taken; remembered in {server.port_file})" if server.moved_from else ""
    announce(f"PostgreSQL: embedded server, data in {server.data_dir}, listening on 127.0.0.1:{server.port}{moved}")
    return server


def database_url(explicit: str | None = None, *, announce: Callable[[str], None] | None = None) -> str:
    """--database-url, else DATABASE_URL, else the embedded server under the local directory
    (started if needed; its line goes to `announce`, default standard output)."""
    url = explicit or os.environ.get("DATABASE_URL", "").strip()
    if url:
        return url
    return start_local_server(announce=announce or (lambda line: print(line))).url


def url_origin(explicit: str | None) -> str:
    """Where database_url() took its URL from, as the user would change it."""
    if explicit:
        return "--database-url"
    return "DATABASE_URL" if os.environ.get("DATABASE_URL", "").strip() else "the embedded server"


class DatabaseProblem(Problem):
    """The database cannot be reached, or refused us."""


def where(url: str) -> str:
    """host:port/dbname of a URL, never its password."""
    try:
        parts = urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql") or not parts.hostname:
            return "the URL given"
        return f"{parts.hostname}:{parts.port or 5432}{parts.path or '/'}"
    except ValueError:
        return "the URL given"


def _meaning(error: psycopg2.Error) -> str:
    text = str(error).strip()
    for marker, meaning in (
        ("Connection refused", "connection refused: nothing listens there"),
        ("could not translate host name", "its host name does not resolve"),
        ("timeout expired", "timed out"),
        ("password authentication failed", "the user name or password was refused"),
        ("does not exist", (text.splitlines() or [""])[0].removeprefix("FATAL:").strip()),
        ("no password supplied", "the server wants a password and the URL has none"),
    ):
        if marker in text:
            return meaning
    return (text.splitlines() or [type(error).__name__])[0]


def open_connection(url: str, origin: str = "DATABASE_URL", **kwargs: Any) -> psycopg2.extensions.connection:
    """connect(), with a failure to connect as one line: where, why, and what to change."""
    try:
        return connect(url, **kwargs)
    except psycopg2.ProgrammingError as error:  # libpq could not parse it at all
        raise UsageProblem(
            f"the database URL from {origin} is not one ({_meaning(error)}): expected {URL_SHAPE}"
        ) from error
    except psycopg2.OperationalError as error:
        if str(error).strip().startswith("invalid "):  # a value libpq rejects: a port, an sslmode
            raise UsageProblem(
                f"the database URL from {origin} is not one ({_meaning(error)}): expected {URL_SHAPE}"
            ) from error
        hint = (
            "is it running? (make run starts it; make stop stops it)"
            if origin == "the embedded server"
            else f"is the server up and reachable from here? Check {origin}"
        )
        raise DatabaseProblem(f"cannot connect to the database at {where(url)} ({_meaning(error)}): {hint}") from error


def migrate_database(dsn: str, origin: str = "DATABASE_URL") -> list[str]:
    """`migrate` over a connection of its own; the versions it applied."""
    conn = open_connection(dsn, origin)
    try:
        return migrate(conn)
    finally:
        conn.close()


def announce_to_stderr(line: str) -> None:
    print(line, file=sys.stderr)
