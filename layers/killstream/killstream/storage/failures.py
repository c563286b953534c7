"""Killmails that could never be stored, by id: the `killmail_failures` table. The fetcher writes a
row when it dead-letters a killmail-bearing message (best-effort: the DLQ holds the message
either way); the reconciler reads them to say why a killmail is missing and to leave alone what
ESI already refused (docs/protocols.md, "R2Z2 history")."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from psycopg2.extensions import connection
from psycopg2.extras import execute_values

from killstream.observability import logger
from killstream.storage.connection import Database

ERROR_MESSAGE_CHARS = 1000


@dataclass(frozen=True)
class KillmailFailure:
    killmail_id: int
    killmail_hash: str
    source: str
    error_type: str
    error_message: str


_RECORD = """
INSERT INTO killmail_failures (killmail_id, killmail_hash, source, error_type, error_message)
VALUES %s
ON CONFLICT (killmail_id) DO UPDATE SET
    killmail_hash = EXCLUDED.killmail_hash,
    source = EXCLUDED.source,
    error_type = EXCLUDED.error_type,
    error_message = EXCLUDED.error_message,
    failures = killmail_failures.failures + 1,
    failed_at = now()
"""


def record_failures(conn: connection, failures: Sequence[KillmailFailure]) -> None:
    """Upsert these failures in one transaction (the last word on a killmail wins)."""
    latest = {failure.killmail_id: failure for failure in failures}
    if not latest:
        return
    rows = [
        (f.killmail_id, f.killmail_hash, f.source, f.error_type, f.error_message[:ERROR_MESSAGE_CHARS])
        for f in latest.values()
    ]
    with conn:
        with conn.cursor() as cur:
            execute_values(cur, _RECORD, rows)


def known_failures(conn: connection, killmail_ids: Iterable[int]) -> dict[int, KillmailFailure]:
    """The recorded failures of these killmails: one query."""
    ids = sorted(set(killmail_ids))
    if not ids:
        return {}
    with conn:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT killmail_id, killmail_hash, source, error_type, error_message FROM killmail_failures "
                "WHERE killmail_id = ANY(%s::bigint[])",
                (ids,),
            )
            return {row[0]: KillmailFailure(*row) for row in cur.fetchall()}


def remember_failures(database: Database, failures: Sequence[KillmailFailure]) -> None:
    """`record_failures`, best-effort: a failure to record is logged, never raised (the DLQ, or
    the reconciliation table, holds the failure either way)."""
    if not failures:
        return
    try:
        database.run(lambda conn: record_failures(conn, failures))
    except Exception as exc:
        logger.warning(
            "could not record killmail failures",
            extra={"killmails": [f.killmail_id for f in failures][:100], "error": f"{type(exc).__name__}: {exc}"},
        )
