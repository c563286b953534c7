"""Names for what the workstation prints (`killstream run`'s console, `killstream stats`): a
killmail's victim, ship and system by name where the names tables have them, by id where they do
not yet (the enricher names a killmail's ids after the fetcher stored it). Workstation only: the
deployed fetcher never waits for a name."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import psycopg2

from killstream.storage.connection import connect

_LOOKUP = """
SELECT (SELECT type_name FROM item_types WHERE type_id = %(ship)s),
       (SELECT name FROM entity_names WHERE id = %(character)s),
       (SELECT name FROM entity_names WHERE id = %(corporation)s),
       (SELECT solar_system_name FROM solar_systems WHERE solar_system_id = %(system)s)"""


def describe(
    ship_type_id: Any,
    character_id: Any,
    corporation_id: Any,
    solar_system_id: Any,
    names: tuple[str | None, str | None, str | None, str | None] = (None, None, None, None),
) -> str:
    """`Drake (Pilot Name, Corp Name) in Jita`; ids where a name is not known (`type 24698`)."""
    ship, character, corporation, system = names
    who = [
        name or f"{kind} {id_}"
        for kind, id_, name in (("character", character_id, character), ("corporation", corporation_id, corporation))
        if id_ is not None
    ]
    text = ship or f"type {ship_type_id}"
    if who:
        text += f" ({', '.join(who)})"
    return f"{text} in {system or f'system {solar_system_id}'}"


class NameBook:
    """Looks names up for console lines: one small query by primary keys per line, on a
    connection of its own. Should the database not answer, lines keep their ids."""

    def __init__(self, dsn: str):
        self.dsn = dsn
        self._conn: Any = None
        self._lock = threading.Lock()

    def describe(self, ids: Mapping[str, Any]) -> str:
        """The victim and place of a fetcher's `saved` line (its keys are the killmails columns')."""
        ship, character, corporation, system = (
            ids.get(key)
            for key in ("victim_ship_type_id", "victim_character_id", "victim_corporation_id", "solar_system_id")
        )
        return describe(ship, character, corporation, system, self._names(ship, character, corporation, system))

    def _names(self, ship: Any, character: Any, corporation: Any, system: Any) -> Any:
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = connect(self.dsn, connect_timeout=2)
                    self._conn.autocommit = True
                with self._conn.cursor() as cur:
                    cur.execute(
                        _LOOKUP, {"ship": ship, "character": character, "corporation": corporation, "system": system}
                    )
                    return cur.fetchone()
            except psycopg2.Error:
                self.close()
                return (None, None, None, None)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
