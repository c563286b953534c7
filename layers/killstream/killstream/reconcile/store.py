"""The per-day record of completeness (`reconciliation`, `reconciliation_missing`; the schema is
storage/sql/003_reconciliation.sql) and the questions the reconciler asks the killmails table:
how many are stored per UTC day, and which of a list are not."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, time, timedelta

from psycopg2.extensions import connection
from psycopg2.extras import execute_values


@dataclass(frozen=True)
class DayRecord:
    """One row of `reconciliation`: a day's last check."""

    source: str
    day: date
    status: str
    expected: int | None
    listed: int | None
    unlisted: int
    stored_before: int
    stored: int
    missing: int
    recovered: int
    enqueued: int
    still_missing: int
    method: str | None
    error: str | None
    list_checked_at: datetime | None
    incomplete_runs: int
    checked_at: datetime


@dataclass(frozen=True)
class MissingKillmail:
    """One row of `reconciliation_missing`: a killmail the day still lacks, and why."""

    killmail_id: int
    killmail_hash: str
    reason: str
    detail: str | None = None


@dataclass(frozen=True)
class WindowDay:
    """A day of the window as the database sees it: killmails stored, and its last check."""

    day: date
    stored: int
    previous: DayRecord | None


_COLUMNS = [f.name for f in fields(DayRecord)]


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


class ReconciliationStore:
    """Over one psycopg2 connection (the caller owns it); each method is one transaction."""

    def __init__(self, conn: connection):
        self.conn = conn

    def window(self, source: str, first: date, last: date) -> list[WindowDay]:
        """Every day from `first` to `last`: its stored count (by killmail_time, UTC) and its
        last record. One query, whatever the window's length."""
        columns = ", ".join(f"r.{name}" for name in _COLUMNS)
        with self.conn, self.conn.cursor() as cur:
            cur.execute(
                f"""
                SELECT g.day::date,
                       (SELECT count(*) FROM killmails k
                        WHERE k.killmail_time >= g.day AT TIME ZONE 'UTC'
                          AND k.killmail_time < (g.day + interval '1 day') AT TIME ZONE 'UTC'),
                       r.source IS NOT NULL, {columns}
                FROM generate_series(%(first)s::timestamp, %(last)s::timestamp, interval '1 day') AS g(day)
                LEFT JOIN reconciliation r ON r.source = %(source)s AND r.day = g.day::date
                ORDER BY g.day
                """,
                {"first": first, "last": last, "source": source},
            )
            rows = cur.fetchall()
        return [WindowDay(day, stored, DayRecord(*record) if known else None) for day, stored, known, *record in rows]

    def stored_count(self, day: date) -> int:
        with self.conn, self.conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM killmails WHERE killmail_time >= %s AND killmail_time < %s",
                (day_start(day), day_start(day + timedelta(days=1))),
            )
            row = cur.fetchone()
        return row[0] if row else 0

    def not_stored(self, killmail_ids: Iterable[int]) -> set[int]:
        """Those of these killmails that are not stored: one query."""
        ids = sorted(set(killmail_ids))
        if not ids:
            return set()
        with self.conn, self.conn.cursor() as cur:
            cur.execute(
                "SELECT id FROM unnest(%s::bigint[]) AS wanted(id) "
                "WHERE NOT EXISTS (SELECT 1 FROM killmails k WHERE k.killmail_id = wanted.id)",
                (ids,),
            )
            return {row[0] for row in cur.fetchall()}

    def missing(self, source: str, day: date) -> list[MissingKillmail]:
        """What the day's last check found still missing, in id order."""
        with self.conn, self.conn.cursor() as cur:
            cur.execute(
                "SELECT killmail_id, killmail_hash, reason, detail FROM reconciliation_missing "
                "WHERE source = %s AND day = %s ORDER BY killmail_id",
                (source, day),
            )
            return [MissingKillmail(*row) for row in cur.fetchall()]

    def save(self, record: DayRecord, missing: Sequence[MissingKillmail] | None) -> None:
        """The day's row, and (unless None: kept as they are) the killmails it still lacks; a
        killmail missing since an earlier check keeps its `since`. One transaction."""
        values = [getattr(record, name) for name in _COLUMNS]
        updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in _COLUMNS if name not in ("source", "day"))
        with self.conn, self.conn.cursor() as cur:
            cur.execute(
                f"INSERT INTO reconciliation ({', '.join(_COLUMNS)}) VALUES ({', '.join(['%s'] * len(_COLUMNS))}) "
                f"ON CONFLICT (source, day) DO UPDATE SET {updates}",
                values,
            )
            if missing is None:
                return
            cur.execute(
                "DELETE FROM reconciliation_missing "
                "WHERE source = %s AND day = %s AND killmail_id <> ALL(%s::bigint[])",
                (record.source, record.day, [m.killmail_id for m in missing]),
            )
            if missing:
                execute_values(
                    cur,
                    "INSERT INTO reconciliation_missing (source, day, killmail_id, killmail_hash, reason, detail) "
                    "VALUES %s ON CONFLICT (source, day, killmail_id) DO UPDATE SET "
                    "killmail_hash = EXCLUDED.killmail_hash, reason = EXCLUDED.reason, detail = EXCLUDED.detail",
                    [(record.source, record.day, m.killmail_id, m.killmail_hash, m.reason, m.detail) for m in missing],
                )
