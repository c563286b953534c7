"""Typed killmails: an ESI document and its zKillboard block, validated strictly.

ESI's schema (docs/protocols.md, "ESI") decides what is required. Anything that would
store a row differing from its document is refused with one typed error naming the field."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from killstream.errors import KillmailValidationError

MAX_ITEMS = 10_000
MAX_ITEM_DEPTH = 8
MAX_ATTACKERS = 100_000
BIGINT_MAX = 2**63 - 1
INTEGER_MAX = 2**31 - 1  # flag, singleton and points are `integer` columns
HASH_RE = re.compile(r"^[0-9a-f]{40}$")
# json.dumps writes U+0000 as \u0000; an odd run of backslashes before it is that escape.
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


@dataclass(frozen=True)
class Attacker:
    character_id: int | None
    corporation_id: int | None
    alliance_id: int | None
    faction_id: int | None
    ship_type_id: int | None
    weapon_type_id: int | None
    damage_done: int
    final_blow: bool
    security_status: float


@dataclass(frozen=True)
class Item:
    """One entry of the victim's items, flattened: `index` is its place in a pre-order walk,
    `parent_index` the container's index (None at top level)."""

    index: int
    parent_index: int | None
    item_type_id: int
    flag: int
    quantity_destroyed: int | None
    quantity_dropped: int | None
    singleton: int


@dataclass(frozen=True)
class Killmail:
    killmail_id: int
    killmail_time: datetime
    solar_system_id: int
    moon_id: int | None
    war_id: int | None
    victim_character_id: int | None
    victim_corporation_id: int | None
    victim_alliance_id: int | None
    victim_faction_id: int | None
    victim_ship_type_id: int
    victim_damage_taken: int
    position: tuple[float, float, float] | None
    attackers: tuple[Attacker, ...]
    items: tuple[Item, ...]
    document: dict = field(repr=False, compare=False)
    document_json: str = field(repr=False, compare=False)


@dataclass(frozen=True)
class Zkb:
    location_id: int | None
    fitted_value: Decimal | None
    dropped_value: Decimal | None
    destroyed_value: Decimal | None
    total_value: Decimal | None
    droppable_value: Decimal | None
    points: int | None
    npc: bool | None
    solo: bool | None
    awox: bool | None
    labels: tuple[str, ...] | None


# --- field readers: each names the path of what it rejects -------------------------------


def _require(doc: dict, key: str, path: str) -> Any:
    if key not in doc or doc[key] is None:
        raise KillmailValidationError(f"{path}{key}", "is required")
    return doc[key]


def validate_object(value: Any, path: str) -> dict:
    if not isinstance(value, dict):
        raise KillmailValidationError(path, f"must be an object, got {type(value).__name__}")
    return value


def validate_id(value: Any, path: str, *, minimum: int = 0, maximum: int = BIGINT_MAX) -> int:
    # bool is an int subclass in Python; JSON `true` is not the number 1.
    if type(value) is not int:
        raise KillmailValidationError(path, f"must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise KillmailValidationError(path, f"must be >= {minimum}, got {value}")
    if value > maximum:
        raise KillmailValidationError(path, f"exceeds {'a 64' if maximum == BIGINT_MAX else 'a 32'}-bit integer")
    return value


def _opt_id(doc: dict, key: str, path: str) -> int | None:
    value = doc.get(key)
    return None if value is None else validate_id(value, path + key)


def _float(value: Any, path: str) -> float:
    if type(value) not in (int, float):
        raise KillmailValidationError(path, f"must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any double
        raise KillmailValidationError(path, "is too large") from None
    if not math.isfinite(number):
        raise KillmailValidationError(path, "must be finite")
    return number


def _bool(value: Any, path: str) -> bool:
    if type(value) is not bool:
        raise KillmailValidationError(path, f"must be true or false, got {type(value).__name__}")
    return value


def _time(value: Any, path: str) -> datetime:
    if not isinstance(value, str):
        raise KillmailValidationError(path, f"must be an ISO-8601 string, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise KillmailValidationError(path, f"is not an ISO-8601 time: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _list(value: Any, path: str) -> list:
    if not isinstance(value, list):
        raise KillmailValidationError(path, f"must be a list, got {type(value).__name__}")
    return value


def validate_hash(value: Any, path: str = "hash") -> str:
    if not isinstance(value, str) or not HASH_RE.match(value):
        raise KillmailValidationError(path, "must be 40 lowercase hex characters")
    return value


# --- ESI killmail -------------------------------------------------------------------------


def _attacker(doc: Any, path: str) -> Attacker:
    doc = validate_object(doc, path)
    p = path + "."
    return Attacker(
        character_id=_opt_id(doc, "character_id", p),
        corporation_id=_opt_id(doc, "corporation_id", p),
        alliance_id=_opt_id(doc, "alliance_id", p),
        faction_id=_opt_id(doc, "faction_id", p),
        ship_type_id=_opt_id(doc, "ship_type_id", p),
        weapon_type_id=_opt_id(doc, "weapon_type_id", p),
        damage_done=validate_id(_require(doc, "damage_done", p), p + "damage_done"),
        final_blow=_bool(_require(doc, "final_blow", p), p + "final_blow"),
        security_status=_float(_require(doc, "security_status", p), p + "security_status"),
    )


def _walk_items(items: Any, path: str, parent: int | None, depth: int, out: list[Item]) -> None:
    if depth > MAX_ITEM_DEPTH:
        raise KillmailValidationError(path, f"items nested deeper than {MAX_ITEM_DEPTH} levels")
    for n, doc in enumerate(_list(items, path)):
        ipath = f"{path}[{n}]"
        doc = validate_object(doc, ipath)
        if len(out) >= MAX_ITEMS:
            raise KillmailValidationError("victim.items", f"more than {MAX_ITEMS} items")
        p = ipath + "."
        index = len(out)
        out.append(
            Item(
                index=index,
                parent_index=parent,
                item_type_id=validate_id(_require(doc, "item_type_id", p), p + "item_type_id"),
                flag=validate_id(_require(doc, "flag", p), p + "flag", maximum=INTEGER_MAX),
                quantity_destroyed=_opt_id(doc, "quantity_destroyed", p),
                quantity_dropped=_opt_id(doc, "quantity_dropped", p),
                singleton=validate_id(_require(doc, "singleton", p), p + "singleton", maximum=INTEGER_MAX),
            )
        )
        if doc.get("items") is not None:
            _walk_items(doc["items"], p + "items", index, depth + 1, out)


def parse_killmail(doc: Any) -> Killmail:
    """Validate an ESI killmail document (extra keys are kept in `document`, not rejected)."""
    doc = validate_object(doc, "killmail")
    victim = validate_object(_require(doc, "victim", ""), "victim")
    attackers_doc = _list(_require(doc, "attackers", ""), "attackers")
    if len(attackers_doc) > MAX_ATTACKERS:
        raise KillmailValidationError("attackers", f"more than {MAX_ATTACKERS} attackers")
    position = None
    if victim.get("position") is not None:
        pos = validate_object(victim["position"], "victim.position")
        x, y, z = (_float(_require(pos, axis, "victim.position."), f"victim.position.{axis}") for axis in "xyz")
        position = (x, y, z)
    items: list[Item] = []
    if victim.get("items") is not None:
        _walk_items(victim["items"], "victim.items", None, 1, items)
    return Killmail(
        killmail_id=validate_id(_require(doc, "killmail_id", ""), "killmail_id", minimum=1),
        killmail_time=_time(_require(doc, "killmail_time", ""), "killmail_time"),
        solar_system_id=validate_id(_require(doc, "solar_system_id", ""), "solar_system_id"),
        moon_id=_opt_id(doc, "moon_id", ""),
        war_id=_opt_id(doc, "war_id", ""),
        victim_character_id=_opt_id(victim, "character_id", "victim."),
        victim_corporation_id=_opt_id(victim, "corporation_id", "victim."),
        victim_alliance_id=_opt_id(victim, "alliance_id", "victim."),
        victim_faction_id=_opt_id(victim, "faction_id", "victim."),
        victim_ship_type_id=validate_id(_require(victim, "ship_type_id", "victim."), "victim.ship_type_id"),
        victim_damage_taken=validate_id(_require(victim, "damage_taken", "victim."), "victim.damage_taken"),
        position=position,
        attackers=tuple(_attacker(a, f"attackers[{n}]") for n, a in enumerate(attackers_doc)),
        items=tuple(items),
        document=doc,
        document_json=_storable_json(doc, "killmail"),
    )


def _storable_json(doc: Any, path: str) -> str:
    """The JSON text PostgreSQL's jsonb will take: it refuses NaN, U+0000 and lone surrogates."""
    try:
        text = json.dumps(doc, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        text.encode("utf-8")
    except (ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError too
        raise KillmailValidationError(path, f"cannot be stored as JSON: {type(exc).__name__}: {exc}") from None
    if _NUL_ESCAPE.search(text):
        raise KillmailValidationError(path, "contains U+0000, which PostgreSQL cannot store")
    return text


# --- zKillboard block ---------------------------------------------------------------------


def _opt_value(doc: dict, key: str) -> Decimal | None:
    value = doc.get(key)
    if value is None:
        return None
    number = _float(value, f"zkb.{key}")
    if number < 0:
        raise KillmailValidationError(f"zkb.{key}", f"must be >= 0, got {value}")
    # via repr so 1.2e8 becomes Decimal('120000000.0'), not a binary expansion
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def _opt_bool(doc: dict, key: str) -> bool | None:
    value = doc.get(key)
    return None if value is None else _bool(value, f"zkb.{key}")


def parse_zkb(doc: Any) -> Zkb:
    """Validate zKillboard's block. Every field is optional: older packages lack some."""
    doc = validate_object(doc, "zkb")
    labels = doc.get("labels")
    if labels is not None:
        labels = _list(labels, "zkb.labels")
        for n, label in enumerate(labels):
            if not isinstance(label, str):
                raise KillmailValidationError(f"zkb.labels[{n}]", "must be a string")
            _storable_json(label, f"zkb.labels[{n}]")
        labels = tuple(labels)
    points = doc.get("points")
    return Zkb(
        location_id=_opt_id(doc, "locationID", "zkb."),
        fitted_value=_opt_value(doc, "fittedValue"),
        dropped_value=_opt_value(doc, "droppedValue"),
        destroyed_value=_opt_value(doc, "destroyedValue"),
        total_value=_opt_value(doc, "totalValue"),
        droppable_value=_opt_value(doc, "totalDroppableValue"),
        points=None
        if points is None
        else validate_id(points, "zkb.points", minimum=-INTEGER_MAX - 1, maximum=INTEGER_MAX),
        npc=_opt_bool(doc, "npc"),
        solo=_opt_bool(doc, "solo"),
        awox=_opt_bool(doc, "awox"),
        labels=labels,
    )
