"""What the killmail events are made of, read from the stored killmails, and the published mark
(sql/005_events.sql): which zKillboard version of each killmail the event bus has taken.

An event is built from the killmail as stored, not from the message that brought it: the row's
zkb values are the latest (an older redelivery never rolls them back), and the names, region and
ship group come from the names tables (sql/004_names.sql, through the killmail_summary view) —
one query for a whole batch, never an ESI call. Names the enricher does not have yet are NULL."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from psycopg2.extensions import connection

EventRow = dict[str, Any]
"""One killmail's event material: the killmail_summary columns, the killmail's own extra columns,
and its attackers' distinct ids (`attacker_*_ids`, sorted)."""

_ROWS = """
SELECT s.*,
       k.killmail_hash, k.moon_id, k.war_id, k.stored_at,
       k.zkb_location_id, k.zkb_fitted_value, k.zkb_dropped_value, k.zkb_destroyed_value, k.zkb_droppable_value,
       k.zkb_version, k.published_version,
       a.attacker_character_ids, a.attacker_corporation_ids, a.attacker_alliance_ids,
       a.attacker_faction_ids, a.attacker_ship_type_ids
FROM killmail_summary s
JOIN killmails k ON k.killmail_id = s.killmail_id
LEFT JOIN LATERAL (
    SELECT array_agg(DISTINCT character_id ORDER BY character_id)
               FILTER (WHERE character_id IS NOT NULL) AS attacker_character_ids,
           array_agg(DISTINCT corporation_id ORDER BY corporation_id)
               FILTER (WHERE corporation_id IS NOT NULL) AS attacker_corporation_ids,
           array_agg(DISTINCT alliance_id ORDER BY alliance_id)
               FILTER (WHERE alliance_id IS NOT NULL) AS attacker_alliance_ids,
           array_agg(DISTINCT faction_id ORDER BY faction_id)
               FILTER (WHERE faction_id IS NOT NULL) AS attacker_faction_ids,
           array_agg(DISTINCT ship_type_id ORDER BY ship_type_id)
               FILTER (WHERE ship_type_id IS NOT NULL) AS attacker_ship_type_ids
    FROM attackers WHERE attackers.killmail_id = k.killmail_id
) a ON true
"""
UNPUBLISHED = "(k.published_version IS NULL OR k.published_version < k.zkb_version)"


class PublicationStore:
    """Reads event material and writes the published mark over one psycopg2 connection (the
    caller owns it); each method is one transaction."""

    def __init__(self, conn: connection):
        self.conn = conn

    def _rows(self, where: str, params: Any) -> list[EventRow]:
        with self.conn:
            with self.conn.cursor() as cur:
                cur.execute(f"{_ROWS} WHERE {where}", params)
                names = [column.name for column in cur.description or ()]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def unpublished(self, killmail_ids: Iterable[int]) -> list[EventRow]:
        """Those of these killmails with an event still to publish, in id order: never published
        (`published_version` NULL), or updated since (`published_version` < `zkb_version`)."""
        ids = sorted(set(killmail_ids))
        if not ids:
            return []
        return self._rows(
            f"k.killmail_id = ANY(%(ids)s::bigint[]) AND {UNPUBLISHED} ORDER BY k.killmail_id", {"ids": ids}
        )

    def stored_since(self, age: timedelta, limit: int) -> list[EventRow]:
        """The killmails stored in the last `age`, oldest first, at most `limit`, published or not
        (`killstream alerts test`)."""
        return self._rows(
            "k.stored_at > now() - %(age)s ORDER BY k.stored_at, k.killmail_id LIMIT %(limit)s",
            {"age": age, "limit": limit},
        )

    def mark_published(self, versions: Mapping[int, int]) -> int:
        """Record that the bus took `versions` ({killmail_id: zkb_version}); never moves a mark
        back (a slower fetcher finishing late cannot). Returns the rows it moved."""
        if not versions:
            return 0
        ids = sorted(versions)
        with self.conn:
            with self.conn.cursor() as cur:
                cur.execute(
                    """UPDATE killmails k SET published_version = v.version
                       FROM unnest(%s::bigint[], %s::integer[]) AS v(killmail_id, version)
                       WHERE k.killmail_id = v.killmail_id
                         AND (k.published_version IS NULL OR k.published_version < v.version)""",
                    (ids, [versions[i] for i in ids]),
                )
                return cur.rowcount

    def backlog(self) -> tuple[int, Any]:
        """(killmails with an event still to publish, the oldest one's stored_at or None)."""
        with self.conn:
            with self.conn.cursor() as cur:
                cur.execute(f"SELECT count(*), min(k.stored_at) FROM killmails k WHERE {UNPUBLISHED}")
                row = cur.fetchone()
                assert row is not None
                return row[0], row[1]
