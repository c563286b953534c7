"""The names tables (sql/004_names.sql): what the enricher reads and writes, in short transactions.

The enricher walks killmails in pages ordered by (stored_at, killmail_id) from its watermark; for
each page it asks which of the page's ids still need ESI — an anti-join of the page's killmails,
attackers and items against the names tables, never of the whole attackers table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg2.extensions import connection
from psycopg2.extras import execute_values


@dataclass(frozen=True, order=True)
class Mark:
    """A killmail's place in the order the enricher walks: (stored_at, killmail_id)."""

    stored_at: datetime
    killmail_id: int


@dataclass(frozen=True)
class Tree:
    """A names table that holds a chain leaf → parent → root, one row per leaf: `levels` are
    (id column, name column) from the leaf up; `extra` are the leaf's other columns."""

    table: str
    levels: tuple[tuple[str, str], ...]
    extra: tuple[str, ...]
    ids_in_page: str  # SQL: the leaf ids the killmails %(page)s mention

    @property
    def leaf(self) -> str:
        return self.levels[0][0]

    @property
    def columns(self) -> tuple[str, ...]:
        return (*(column for level in self.levels for column in level), *self.extra, "error")


SYSTEMS = Tree(
    "solar_systems",
    (
        ("solar_system_id", "solar_system_name"),
        ("constellation_id", "constellation_name"),
        ("region_id", "region_name"),
    ),
    ("security_status",),
    "SELECT solar_system_id FROM killmails WHERE killmail_id = ANY(%(page)s::bigint[])",
)
TYPES = Tree(
    "item_types",
    (("type_id", "type_name"), ("group_id", "group_name"), ("category_id", "category_name")),
    (),
    """SELECT victim_ship_type_id FROM killmails WHERE killmail_id = ANY(%(page)s::bigint[])
       UNION SELECT unnest(ARRAY[ship_type_id, weapon_type_id])
             FROM attackers WHERE killmail_id = ANY(%(page)s::bigint[])
       UNION SELECT item_type_id FROM items WHERE killmail_id = ANY(%(page)s::bigint[])""",
)
_ENTITY_IDS = """
    SELECT unnest(ARRAY[victim_character_id, victim_corporation_id, victim_alliance_id, victim_faction_id])
    FROM killmails WHERE killmail_id = ANY(%(page)s::bigint[])
    UNION
    SELECT unnest(ARRAY[character_id, corporation_id, alliance_id, faction_id])
    FROM attackers WHERE killmail_id = ANY(%(page)s::bigint[])"""

Row = dict[str, Any]
"""A tree table's row, by column name."""


class NamesStore:
    """Reads and writes the names tables over one psycopg2 connection (the caller owns it); each
    method is one transaction."""

    def __init__(self, conn: connection):
        self.conn = conn

    def _all(self, sql: str, params: Any = None) -> list[tuple]:
        with self.conn:
            with self.conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()

    def now(self) -> datetime:
        """The database's clock: stored_at is on it."""
        ((now,),) = self._all("SELECT now()")
        return now

    # --- where the enricher is ---------------------------------------------------------------

    def watermark(self) -> Mark | None:
        rows = self._all("SELECT stored_at, killmail_id FROM enrichment_watermark")
        return Mark(*rows[0]) if rows else None

    def advance_watermark(self, mark: Mark) -> None:
        """Move the mark forward to `mark`; never back (a slower run finishing late cannot)."""
        with self.conn:
            with self.conn.cursor() as cur:
                cur.execute(
                    """INSERT INTO enrichment_watermark (stored_at, killmail_id) VALUES (%s, %s)
                       ON CONFLICT (only_row) DO UPDATE
                       SET stored_at = EXCLUDED.stored_at, killmail_id = EXCLUDED.killmail_id, updated_at = now()
                       WHERE (enrichment_watermark.stored_at, enrichment_watermark.killmail_id)
                           < (EXCLUDED.stored_at, EXCLUDED.killmail_id)""",
                    (mark.stored_at, mark.killmail_id),
                )

    def page(self, after: Mark | None, until: datetime, limit: int) -> list[Mark]:
        """The next `limit` killmails after `after` (from the first when None) stored by `until`."""
        select = "SELECT stored_at, killmail_id FROM killmails WHERE stored_at <= %s"
        params: tuple = (until,)
        if after is not None:
            select += " AND (stored_at, killmail_id) > (%s, %s)"
            params += (after.stored_at, after.killmail_id)
        rows = self._all(f"{select} ORDER BY stored_at, killmail_id LIMIT %s", (*params, limit))
        return [Mark(*row) for row in rows]

    # --- what a page still needs -------------------------------------------------------------

    def pending_entities(self, page: Sequence[int], retry_after: timedelta) -> list[int]:
        """Character, corporation, alliance and faction ids of the page's killmails that are
        neither named nor recorded unresolvable since `retry_after` ago."""
        rows = self._all(
            f"""WITH ids(id) AS ({_ENTITY_IDS})
                SELECT id FROM ids WHERE id IS NOT NULL AND NOT EXISTS (
                    SELECT 1 FROM entity_names n
                    WHERE n.id = ids.id AND (n.error IS NULL OR n.resolved_at > now() - %(retry)s))
                ORDER BY id""",
            {"page": list(page), "retry": retry_after},
        )
        return [id_ for (id_,) in rows]

    def pending_leaves(self, tree: Tree, page: Sequence[int], retry_after: timedelta) -> dict[int, Row | None]:
        """The page's leaf ids whose row is missing, being completed, or failed before
        `retry_after` ago: {id: the row being completed, or None to start over}."""
        root_name = tree.levels[-1][1]
        columns = ", ".join(f"t.{column}" for column in tree.columns)
        rows = self._all(
            f"""WITH ids(id) AS ({tree.ids_in_page})
                SELECT ids.id, t.{tree.leaf} IS NOT NULL AND t.error IS NULL, {columns}
                FROM ids LEFT JOIN {tree.table} t ON t.{tree.leaf} = ids.id
                WHERE ids.id IS NOT NULL AND (
                    t.{tree.leaf} IS NULL
                    OR (t.error IS NULL AND t.{root_name} IS NULL)
                    OR (t.error IS NOT NULL AND t.resolved_at <= now() - %(retry)s))
                ORDER BY ids.id""",
            {"page": list(page), "retry": retry_after},
        )
        return {row[0]: dict(zip(tree.columns, row[2:], strict=True)) if row[1] else None for row in rows}

    def known(self, tree: Tree, level: int, ids: Iterable[int]) -> dict[int, tuple[str, int | None]]:
        """What other rows already know of these ids at `level` (> 0): {id: (name, parent id)}."""
        id_column, name_column = tree.levels[level]
        parent = tree.levels[level + 1][0] if level + 1 < len(tree.levels) else "NULL::bigint"
        rows = self._all(
            f"""SELECT DISTINCT ON ({id_column}) {id_column}, {name_column}, {parent}
                FROM {tree.table} WHERE {id_column} = ANY(%s::bigint[]) AND {name_column} IS NOT NULL""",
            (sorted(set(ids)),),
        )
        return {id_: (name, parent_id) for id_, name, parent_id in rows}

    # --- writing what ESI said ---------------------------------------------------------------

    def save_rows(self, tree: Tree, rows: Iterable[Row]) -> None:
        values = [tuple(row.get(column) for column in tree.columns) for row in rows]
        if not values:
            return
        updates = ", ".join(f"{column} = EXCLUDED.{column}" for column in tree.columns[1:])
        with self.conn:
            with self.conn.cursor() as cur:
                execute_values(
                    cur,
                    f"""INSERT INTO {tree.table} ({", ".join(tree.columns)}, resolved_at) VALUES %s
                        ON CONFLICT ({tree.leaf}) DO UPDATE SET {updates}, resolved_at = now()""",
                    values,
                    template=f"({', '.join(['%s'] * len(tree.columns))}, now())",
                    page_size=1000,
                )

    def save_entities(self, rows: Iterable[tuple[int, str | None, str | None, str | None]]) -> None:
        """(id, category, name, error) rows: named when error is None, unresolvable otherwise."""
        values = list(rows)
        if not values:
            return
        with self.conn:
            with self.conn.cursor() as cur:
                execute_values(
                    cur,
                    """INSERT INTO entity_names (id, category, name, error, resolved_at) VALUES %s
                       ON CONFLICT (id) DO UPDATE SET category = EXCLUDED.category, name = EXCLUDED.name,
                           error = EXCLUDED.error, resolved_at = now()""",
                    values,
                    template="(%s, %s, %s, %s, now())",
                    page_size=1000,
                )
