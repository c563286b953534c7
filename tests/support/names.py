"""What the names tests share: killmails stored straight through the batch writer, and the ids a
set of killmail documents names, read from the documents themselves (the oracle the enricher's
SQL is checked against)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from killstream.killmail import parse_killmail, parse_zkb
from killstream.storage.writer import KillmailRecord, KillmailStore
from killstream_workstation import corpus
from killstream_workstation.simulators.universe import GeneratedUniverse

ENTITY_KEYS = ("character_id", "corporation_id", "alliance_id", "faction_id")


def store_killmails(conn, docs: Iterable[dict], source: str = "tests") -> None:
    records = []
    for doc in docs:
        esi, killmail_hash = corpus.split_hash(doc)
        records.append(KillmailRecord(parse_killmail(esi), killmail_hash, parse_zkb(corpus.zkb_for(doc)), source))
    KillmailStore(conn).write(records)


@dataclass(frozen=True)
class Ids:
    entities: frozenset[int]
    systems: frozenset[int]
    types: frozenset[int]


def ids_of(docs: Iterable[dict]) -> Ids:
    entities: set[int] = set()
    systems: set[int] = set()
    types: set[int] = set()
    for doc in docs:
        systems.add(doc["solar_system_id"])
        victim = doc["victim"]
        for party in (victim, *doc["attackers"]):
            entities.update(party[key] for key in ENTITY_KEYS if party.get(key) is not None)
            types.update(party[key] for key in ("ship_type_id", "weapon_type_id") if party.get(key) is not None)
        stack = list(victim.get("items", []))
        while stack:
            item = stack.pop()
            types.add(item["item_type_id"])
            stack.extend(item.get("items", []))
    return Ids(frozenset(entities), frozenset(systems), frozenset(types))


def lookups_needed(universe: GeneratedUniverse) -> dict[str, int]:
    """One GET per id of each kind the universe answers for."""
    return {
        "systems": len(universe.systems),
        "constellations": len(universe.constellations),
        "regions": len(universe.regions),
        "types": len(universe.types),
        "groups": len(universe.groups),
        "categories": len(universe.categories),
    }


def names_calls_needed(unknown_ids: int) -> int:
    return math.ceil(unknown_ids / 1000)


def fetch_all(conn, sql: str, params=None) -> list[tuple]:
    with conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()
