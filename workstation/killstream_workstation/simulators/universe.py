"""A generated EVE universe for the local ESI's universe routes: every id of the killmails added
gets a name, and every system and type a place in a chain (system → constellation → region,
type → group → category), all derived from the ids alone, so the same id always gets the same
answer. Ids never added, or forgotten on purpose, are unknown: ESI's 404."""

from __future__ import annotations

import random
from collections.abc import Iterable

# The roles of a killmail's ids, as /universe/names/ categorizes them.
_ENTITY_KEYS = {
    "character_id": "character",
    "corporation_id": "corporation",
    "alliance_id": "alliance",
    "faction_id": "faction",
}
_SYLLABLES = ("ka", "ra", "vo", "lin", "tor", "es", "mi", "dan", "sul", "ae", "ri", "os", "bel", "qu", "ny", "zar")
_CORPORATION = ("Industries", "Holdings", "Corporation", "Enterprises", "Syndicate", "Works")
_FACTION = ("Federation", "Empire", "Republic", "State", "Collective")
_GROUPS = ("Frigate", "Cruiser", "Battleship", "Titan", "Capsule", "Freighter", "Destroyer", "Carrier", "Module")
_CATEGORIES = ("Ship", "Module", "Charge", "Drone", "Structure", "Commodity", "Deployable")


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(syllables)).capitalize()


def constellation_of(system_id: int) -> int:
    return 20_000_000 + (system_id - 30_000_000) // 7


def region_of(constellation_id: int) -> int:
    return 10_000_000 + (constellation_id - 20_000_000) // 9


def group_of(type_id: int) -> int:
    return 2_000 + type_id % 97


def category_of(group_id: int) -> int:
    return 1 + group_id % 13


class GeneratedUniverse:
    """Knows the ids of the killmails added (`add_killmail`); answers for them, and for the
    constellations, regions, groups and categories their chains lead to."""

    def __init__(self) -> None:
        self.entities: dict[int, str] = {}  # id -> /universe/names/ category
        self.systems: set[int] = set()
        self.types: set[int] = set()
        self.forgotten: set[int] = set()

    def add_killmail(self, esi: dict) -> None:
        self.systems.add(esi["solar_system_id"])
        victim = esi.get("victim", {})
        for party in (victim, *esi.get("attackers", [])):
            for key, category in _ENTITY_KEYS.items():
                if party.get(key) is not None:
                    self.entities[party[key]] = category
            for key in ("ship_type_id", "weapon_type_id"):
                if party.get(key) is not None:
                    self.types.add(party[key])
        stack = list(victim.get("items", []))
        while stack:
            item = stack.pop()
            self.types.add(item["item_type_id"])
            stack.extend(item.get("items", []))

    def forget(self, *ids: int) -> None:
        """Make ids unknown: a names batch holding one answers 404, and so does its GET."""
        self.forgotten.update(ids)

    # --- the chains ---------------------------------------------------------------------------

    @property
    def constellations(self) -> set[int]:
        return {constellation_of(s) for s in self.systems}

    @property
    def regions(self) -> set[int]:
        return {region_of(c) for c in self.constellations}

    @property
    def groups(self) -> set[int]:
        return {group_of(t) for t in self.types}

    @property
    def categories(self) -> set[int]:
        return {category_of(g) for g in self.groups}

    # --- answers ------------------------------------------------------------------------------

    def name(self, category: str, id_: int) -> str:
        rng = random.Random(f"{category}:{id_}")
        if category == "character":
            return f"{_word(rng, 2)} {_word(rng, 3)}"
        if category == "corporation":
            return f"{_word(rng, 2)} {rng.choice(_CORPORATION)}"
        if category == "alliance":
            return f"The {_word(rng, 3)} Alliance"
        if category == "faction":
            return f"{_word(rng, 2)} {rng.choice(_FACTION)}"
        if category == "system":
            return f"{_word(rng, 2)}-{id_ % 1000:03d}"
        if category == "constellation":
            return f"{_word(rng, 2)} Reach"
        if category == "region":
            return f"The {_word(rng, 2)}"
        if category == "type":
            return f"{_word(rng, 2)} {rng.choice(('I', 'II', 'Mk', 'Prototype'))}"
        if category == "group":
            return f"{_GROUPS[id_ % len(_GROUPS)]} {id_}"
        return f"{_CATEGORIES[id_ % len(_CATEGORIES)]} {id_}"

    def names(self, ids: Iterable[int]) -> list[dict] | None:
        """The POST /universe/names/ answer, or None (404) when any id is unknown."""
        wanted = sorted(set(ids))
        if any(i not in self.entities or i in self.forgotten for i in wanted):
            return None
        return [{"id": i, "name": self.name(self.entities[i], i), "category": self.entities[i]} for i in wanted]

    def lookup(self, kind: str, id_: int) -> dict | None:
        """The GET /universe/{kind}/{id}/ answer, or None (404)."""
        if id_ in self.forgotten:
            return None
        if kind == "systems" and id_ in self.systems:
            security = round(random.Random(id_).uniform(-1.0, 1.0), 6)
            return {
                "system_id": id_,
                "name": self.name("system", id_),
                "constellation_id": constellation_of(id_),
                "security_status": security,
            }
        if kind == "constellations" and id_ in self.constellations:
            return {"constellation_id": id_, "name": self.name("constellation", id_), "region_id": region_of(id_)}
        if kind == "regions" and id_ in self.regions:
            return {"region_id": id_, "name": self.name("region", id_)}
        if kind == "types" and id_ in self.types:
            return {"type_id": id_, "name": self.name("type", id_), "group_id": group_of(id_), "published": True}
        if kind == "groups" and id_ in self.groups:
            return {"group_id": id_, "name": self.name("group", id_), "category_id": category_of(id_)}
        if kind == "categories" and id_ in self.categories:
            return {"category_id": id_, "name": self.name("category", id_)}
        return None
