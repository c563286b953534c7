"""The batch writer: killmails with their attackers and items into PostgreSQL, exactly once.

A batch is one transaction of at most six round trips whatever its size: BEGIN; the killmail
rows COPied into a session-local staging table; one statement that inserts the new ones and
applies newer zKillboard values to those already stored; the attackers, then the items, of
exactly the killmails this transaction inserted, COPied straight into their tables (each COPY
only when it has rows: a batch that inserted nothing makes four); COMMIT. The staging table is
created once per connection (a seventh round trip on its first batch), not per batch. A
concurrent writer of the same killmail waits on its primary key and then finds it stored, so
rows never double.

`stored_keys` is the read that lets the fetcher settle re-deliveries before parsing them: one
query for the publication key of those of a batch's killmails that are stored.

Which zKillboard values are newer (docs/protocols.md, "R2Z2": latest wins by `uploaded_at`,
then `sequence_id`): a publication is ordered by its key (uploaded_at, sequence_id). When the
incoming and the stored row both have an uploaded_at, the greater key wins — an in-place update
keeps its sequence_id and wins by its newer uploaded_at — and the stored key moves to it even
when the values are the same. When either lacks an uploaded_at (a row stored before it was kept)
but both have a sequence_id, the greater sequence wins, and the same sequence wins when its
values differ and it brings the uploaded_at the row lacks. When either has no key at all
(RedisQ packages), the incoming values win when they differ, as they always did, and the stored
key stays. A record with no zkb values at all (history, backfill) never replaces stored ones."""

from __future__ import annotations

import io
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import astuple, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING

from killstream.killmail import Killmail, Zkb

if TYPE_CHECKING:
    from psycopg2.extensions import connection, cursor


class Outcome(StrEnum):
    """What a write did to a killmail: the store's word (the fetcher's is `Disposition`)."""

    INSERTED = "inserted"
    DUPLICATE = "duplicate"  # already stored, nothing changed
    ZKB_UPDATED = "zkb_updated"  # already stored; zKillboard's newer values replaced ours


@dataclass(frozen=True)
class KillmailRecord:
    """Everything stored for one killmail."""

    killmail: Killmail
    killmail_hash: str
    zkb: Zkb
    source: str
    sequence_id: int | None = None
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    uploaded_at: datetime | None = None
    publish: bool = False
    """Its writer publishes its events after the write (the live fetcher, with a bus); otherwise
    it is stored as published already (sql/005_events.sql)."""

    @property
    def killmail_id(self) -> int:
        return self.killmail.killmail_id

    @property
    def has_zkb(self) -> bool:
        """Whether it carries zKillboard values at all: history and backfill records do not."""
        return any(value is not None for value in astuple(self.zkb))

    @property
    def awaits_publication(self) -> bool:
        """Stored with its "Killmail Stored" event still to go. Not a record without zkb values,
        whoever writes it: history is not news (the reconciler's, from a raw file or through the
        fetcher's queue; a backfill's). Should the live feed later bring its zkb, that update is
        published, as `Killmail Updated` (docs/events.md, "What publishes")."""
        return self.publish and self.has_zkb


_ZKB_COLUMNS = (
    "zkb_location_id",
    "zkb_fitted_value",
    "zkb_dropped_value",
    "zkb_destroyed_value",
    "zkb_total_value",
    "zkb_droppable_value",
    "zkb_points",
    "zkb_npc",
    "zkb_solo",
    "zkb_awox",
    "zkb_labels",
)
KILLMAIL_COLUMNS = (
    "killmail_id",
    "killmail_hash",
    "killmail_time",
    "solar_system_id",
    "moon_id",
    "war_id",
    "victim_character_id",
    "victim_corporation_id",
    "victim_alliance_id",
    "victim_faction_id",
    "victim_ship_type_id",
    "victim_damage_taken",
    "position_x",
    "position_y",
    "position_z",
    "attacker_count",
    *_ZKB_COLUMNS,
    "esi",
    "source",
    "sequence_id",
    "uploaded_at",
    "received_at",
    "published_version",
)
ATTACKER_COLUMNS = (
    "killmail_id",
    "attacker_index",
    "character_id",
    "corporation_id",
    "alliance_id",
    "faction_id",
    "ship_type_id",
    "weapon_type_id",
    "damage_done",
    "final_blow",
    "security_status",
)
ITEM_COLUMNS = (
    "killmail_id",
    "item_index",
    "parent_index",
    "item_type_id",
    "flag",
    "quantity_destroyed",
    "quantity_dropped",
    "singleton",
)

# ON COMMIT DELETE ROWS: the staging table lives as long as the connection, empty between batches.
_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS stage_killmails "
    "(LIKE killmails INCLUDING DEFAULTS INCLUDING COMPRESSION) ON COMMIT DELETE ROWS"
)
# The connections whose session has the staging table. A connection joins only once a write
# that created it has committed: a temp table created in a transaction that rolled back is gone.
# A new connection (Database's reconnect) is a new object, so it creates its own.
_staged: weakref.WeakSet[connection] = weakref.WeakSet()

_killmail_list = ", ".join(KILLMAIL_COLUMNS)
_zkb_set = ",\n    ".join(f"{c} = EXCLUDED.{c}" for c in _ZKB_COLUMNS)
_zkb_stored = ", ".join(f"killmails.{c}" for c in _ZKB_COLUMNS)
_zkb_new = ", ".join(f"EXCLUDED.{c}" for c in _ZKB_COLUMNS)
_zkb_differ = f"({_zkb_stored}) IS DISTINCT FROM ({_zkb_new})"
# The module docstring says which publication is newer; this is that rule, in SQL.
_NEWER = f"""CASE
    WHEN EXCLUDED.uploaded_at IS NOT NULL AND killmails.uploaded_at IS NOT NULL
        THEN (EXCLUDED.uploaded_at, COALESCE(EXCLUDED.sequence_id, -1))
           > (killmails.uploaded_at, COALESCE(killmails.sequence_id, -1))
    WHEN EXCLUDED.sequence_id IS NOT NULL AND killmails.sequence_id IS NOT NULL
        THEN EXCLUDED.sequence_id > killmails.sequence_id
          OR (EXCLUDED.sequence_id = killmails.sequence_id AND EXCLUDED.uploaded_at IS NOT NULL AND {_zkb_differ})
    ELSE {_zkb_differ}
END"""
_keyed = "EXCLUDED.uploaded_at IS NOT NULL OR EXCLUDED.sequence_id IS NOT NULL"
# DO UPDATE, not DO NOTHING then UPDATE: a conflicting row is locked and re-read as committed,
# so a writer racing another one for the same killmail still applies its newer zkb values.
# In SET, killmails.* is the stored row: zkb_updated_at moves only when the values change, and
# RETURNING tells those rows (now(): this transaction's start) from the ones whose key alone
# moved. xmax = 0 tells a row this statement inserted from one it updated.
_MERGE = f"""
INSERT INTO killmails ({_killmail_list})
SELECT {_killmail_list} FROM stage_killmails ORDER BY killmail_id
ON CONFLICT (killmail_id) DO UPDATE SET
    {_zkb_set},
    sequence_id = CASE WHEN {_keyed} THEN EXCLUDED.sequence_id ELSE killmails.sequence_id END,
    uploaded_at = CASE WHEN {_keyed} THEN EXCLUDED.uploaded_at ELSE killmails.uploaded_at END,
    zkb_updated_at = CASE WHEN {_zkb_differ} THEN now() ELSE killmails.zkb_updated_at END,
    -- a version more only when the values change (an update to publish), not when the key alone moves
    zkb_version = CASE WHEN {_zkb_differ} THEN killmails.zkb_version + 1 ELSE killmails.zkb_version END
WHERE {_NEWER}
  -- A record with no zkb values (history, backfill) never replaces stored ones: for a killmail
  -- already stored it is a duplicate. A later live publication fills NULL zkb columns in.
  AND NOT (({_zkb_new}) IS NULL)
RETURNING killmail_id,
    CASE WHEN xmax = 0 THEN 'inserted' WHEN zkb_updated_at = now() THEN 'zkb_updated' ELSE 'duplicate' END
"""


NULL = "\\N"  # COPY text format's NULL
COPY_CHUNK = 1024 * 1024
"""COPY data is handed to libpq a MB at a time, not psycopg2's default 8 KB: each read takes the
GIL again, and a thread parsing the next batch meanwhile (the backfill's) would hold it up to
the 5 ms switch interval every time — seconds per large batch."""


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _array_literal(labels: Sequence[str]) -> str:
    quoted = ('"' + label.replace("\\", "\\\\").replace('"', '\\"') + '"' for label in labels)
    return "{" + ",".join(quoted) + "}"


def _copy_field(value: object) -> str:
    """One value in COPY's text format."""
    if value is None:
        return NULL
    if value is True:
        return "t"
    if value is False:
        return "f"
    if isinstance(value, (int, float, Decimal)):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return _escape(_array_literal(value))
    return _escape(str(value))


def _copy_rows(rows: Iterable[tuple]) -> io.StringIO:
    buffer = io.StringIO()
    buffer.writelines("\t".join(map(_copy_field, row)) + "\n" for row in rows)
    buffer.seek(0)
    return buffer


def killmail_row(record: KillmailRecord) -> tuple:
    km, zkb = record.killmail, record.zkb
    x, y, z = km.position or (None, None, None)
    return (
        km.killmail_id,
        record.killmail_hash,
        km.killmail_time,
        km.solar_system_id,
        km.moon_id,
        km.war_id,
        km.victim_character_id,
        km.victim_corporation_id,
        km.victim_alliance_id,
        km.victim_faction_id,
        km.victim_ship_type_id,
        km.victim_damage_taken,
        x,
        y,
        z,
        len(km.attackers),
        zkb.location_id,
        zkb.fitted_value,
        zkb.dropped_value,
        zkb.destroyed_value,
        zkb.total_value,
        zkb.droppable_value,
        zkb.points,
        zkb.npc,
        zkb.solo,
        zkb.awox,
        zkb.labels,
        km.document_json,
        record.source,
        record.sequence_id,
        record.uploaded_at,
        record.received_at,
        None if record.awaits_publication else 0,  # NULL: its "Killmail Stored" event is still to go
    )


# Attackers and items are most of the rows: their COPY lines are built inline, without a
# call per value (ids are ints or None, so they need no escaping).
def _attacker_lines(km: Killmail) -> Iterator[str]:
    kid = km.killmail_id
    for n, a in enumerate(km.attackers):
        yield (
            f"{kid}\t{n}\t"
            f"{NULL if a.character_id is None else a.character_id}\t"
            f"{NULL if a.corporation_id is None else a.corporation_id}\t"
            f"{NULL if a.alliance_id is None else a.alliance_id}\t"
            f"{NULL if a.faction_id is None else a.faction_id}\t"
            f"{NULL if a.ship_type_id is None else a.ship_type_id}\t"
            f"{NULL if a.weapon_type_id is None else a.weapon_type_id}\t"
            f"{a.damage_done}\t{'t' if a.final_blow else 'f'}\t{a.security_status!r}\n"
        )


def _item_lines(km: Killmail) -> Iterator[str]:
    kid = km.killmail_id
    for i in km.items:
        yield (
            f"{kid}\t{i.index}\t{NULL if i.parent_index is None else i.parent_index}\t"
            f"{i.item_type_id}\t{i.flag}\t"
            f"{NULL if i.quantity_destroyed is None else i.quantity_destroyed}\t"
            f"{NULL if i.quantity_dropped is None else i.quantity_dropped}\t{i.singleton}\n"
        )


def publication_key(record: KillmailRecord) -> tuple[datetime, int]:
    """How publications of one killmail are ordered (the module docstring): a record without
    uploaded_at or sequence_id sorts before one that has them."""
    return (record.uploaded_at or _NO_UPLOAD, -1 if record.sequence_id is None else record.sequence_id)


_NO_UPLOAD = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class StoredKey:
    """The publication key (uploaded_at, sequence_id) of a stored killmail."""

    uploaded_at: datetime | None
    sequence_id: int | None

    def settles(self, uploaded_at: datetime | None, sequence_id: int | None) -> bool:
        """Whether a publication with this key would change nothing of the stored row whatever
        its zkb values: the MERGE's rule (the module docstring) answers "not newer" from the
        keys alone. False when the values would decide (only the MERGE compares them) or the
        incoming key is newer."""
        if uploaded_at is not None and self.uploaded_at is not None:
            incoming = (uploaded_at, -1 if sequence_id is None else sequence_id)
            return incoming <= (self.uploaded_at, -1 if self.sequence_id is None else self.sequence_id)
        if sequence_id is not None and self.sequence_id is not None:
            return sequence_id < self.sequence_id or (sequence_id == self.sequence_id and uploaded_at is None)
        return False


def _latest_per_killmail(records: Sequence[KillmailRecord]) -> list[KillmailRecord]:
    """One record per killmail id: the newest publication (of equals, the last given); one
    carrying zkb values before one without."""
    chosen: dict[int, KillmailRecord] = {}
    for record in records:
        current = chosen.get(record.killmail_id)
        if current is None or _rank(record) >= _rank(current):
            chosen[record.killmail_id] = record
    return list(chosen.values())


def _rank(record: KillmailRecord) -> tuple[bool, tuple[datetime, int]]:
    return record.has_zkb, publication_key(record)


class KillmailStore:
    """Reads and writes killmails over one psycopg2 connection (the caller owns it)."""

    def __init__(self, conn: connection):
        self.conn = conn

    def stored_documents(self, killmail_ids: Iterable[int]) -> dict[int, dict]:
        """The ESI documents of those of these killmails that are stored: one query. A killmail
        that arrives again without its document needs it to take newer zkb values."""
        ids = sorted(set(killmail_ids))
        if not ids:
            return {}
        with self.conn:
            with self.conn.cursor() as cur:
                cur.execute("SELECT killmail_id, esi FROM killmails WHERE killmail_id = ANY(%s::bigint[])", (ids,))
                return dict(cur.fetchall())

    def stored_keys(self, killmail_ids: Iterable[int]) -> dict[int, StoredKey]:
        """The publication key of those of these killmails that are stored: one query, reading
        no document."""
        ids = sorted(set(killmail_ids))
        if not ids:
            return {}
        with self.conn:
            with self.conn.cursor() as cur:
                cur.execute(
                    "SELECT killmail_id, uploaded_at, sequence_id FROM killmails WHERE killmail_id = ANY(%s::bigint[])",
                    (ids,),
                )
                return {
                    killmail_id: StoredKey(uploaded_at, sequence_id) for killmail_id, uploaded_at, sequence_id in cur
                }

    def merge(self, cur: cursor, records: Sequence[KillmailRecord]) -> dict[int, Outcome]:
        """The killmail rows, staged and merged into `killmails` in the caller's transaction: the
        killmails this inserted, those whose values it updated, and those whose ordering key
        alone it moved (DUPLICATE); one record per killmail id."""
        if self.conn not in _staged:
            cur.execute(_STAGING)
        rows = _copy_rows(map(killmail_row, records))
        cur.copy_expert(f"COPY stage_killmails ({_killmail_list}) FROM STDIN", rows, size=COPY_CHUNK)
        cur.execute(_MERGE)
        return {killmail_id: Outcome(kind) for killmail_id, kind in cur.fetchall()}

    def write(self, records: Sequence[KillmailRecord]) -> list[Outcome]:
        """Store a batch in one transaction. Returns the outcome of each record, in order;
        a killmail given twice counts once, its other copies are duplicates."""
        if not records:
            return []
        unique = _latest_per_killmail(records)
        with self.conn:
            with self.conn.cursor() as cur:
                changed = self.merge(cur, unique)
                new = [r.killmail for r in unique if changed.get(r.killmail_id) is Outcome.INSERTED]
                attackers = "".join(line for km in new for line in _attacker_lines(km))
                if attackers:
                    cur.copy_expert(
                        f"COPY attackers ({', '.join(ATTACKER_COLUMNS)}) FROM STDIN",
                        io.StringIO(attackers),
                        size=COPY_CHUNK,
                    )
                items = "".join(line for km in new for line in _item_lines(km))
                if items:
                    cur.copy_expert(
                        f"COPY items ({', '.join(ITEM_COLUMNS)}) FROM STDIN", io.StringIO(items), size=COPY_CHUNK
                    )
        _staged.add(self.conn)
        outcomes, seen = [], set()
        for r in records:  # the first copy of a killmail carries its outcome
            outcomes.append(
                Outcome.DUPLICATE if r.killmail_id in seen else changed.get(r.killmail_id, Outcome.DUPLICATE)
            )
            seen.add(r.killmail_id)
        return outcomes
