"""The killmail event: a small, versioned contract (docs/events.md), not the ESI document.

Source `killstream`; detail-type `Killmail Stored` (first publication of a killmail) or
`Killmail Updated` (newer zKillboard values were applied); `detail.version` is the contract's
version. Fields carry ESI's and zKillboard's own names; names, region and ship group come from
the names tables where the enricher has them. A field ESI omits, or a name not known yet, is
absent, not null. Built from the stored killmail (storage/publication.py), by the fetcher and by
`killstream alerts test` alike."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

SOURCE = "killstream"
STORED = "Killmail Stored"
UPDATED = "Killmail Updated"
DETAIL_TYPES = (STORED, UPDATED)
DETAIL_VERSION = 1
# EventBridge takes entries of up to 256 KB (docs/protocols.md, "AWS limits"); a detail is a few
# KB, except the id lists of a killmail with thousands of attackers, which are cut to fit this.
MAX_DETAIL_BYTES = 200_000
# Dropped in this order when a detail would be larger (attackers.truncated says so).
_ATTACKER_LISTS = ("character_ids", "ship_type_ids", "corporation_ids", "faction_ids", "alliance_ids")


@dataclass(frozen=True)
class KillmailEvent:
    """One event for the bus: which killmail, at which zkb version, and its detail."""

    killmail_id: int
    zkb_version: int
    detail_type: str
    detail: dict[str, Any]

    @property
    def detail_json(self) -> str:
        return json.dumps(self.detail, separators=(",", ":"), ensure_ascii=False)

    def envelope(self, *, event_id: str, time: datetime, account: str, region: str) -> dict[str, Any]:
        """The event as EventBridge delivers it to targets (what patterns are matched against)."""
        return {
            "version": "0",
            "id": event_id,
            "detail-type": self.detail_type,
            "source": SOURCE,
            "account": account,
            "time": _iso(time),
            "region": region,
            "resources": [],
            "detail": self.detail,
        }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _number(value: Any) -> int | float | None:
    """JSON numbers as zKillboard writes them (PostgreSQL's numeric arrives as Decimal)."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and abs(value) < 2**53 else float(value)
    return value


def _present(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Without the fields that are unknown: absent, never null (patterns can say `exists`)."""
    return {key: value for key, value in fields.items() if value is not None and value != []}


def killmail_event(row: Mapping[str, Any], detail_type: str | None = None) -> KillmailEvent:
    """The event of one stored killmail (a storage.publication.EventRow). Without `detail_type`:
    `Killmail Stored` when it was never published, else `Killmail Updated`."""
    if detail_type is None:
        detail_type = STORED if row.get("published_version") is None else UPDATED
    killmail_id = int(row["killmail_id"])
    total = _number(row.get("zkb_total_value"))
    victim = _present(
        {
            "character_id": row.get("victim_character_id"),
            "character_name": row.get("victim_character_name"),
            "corporation_id": row.get("victim_corporation_id"),
            "corporation_name": row.get("victim_corporation_name"),
            "alliance_id": row.get("victim_alliance_id"),
            "alliance_name": row.get("victim_alliance_name"),
            "faction_id": row.get("victim_faction_id"),
            "faction_name": row.get("victim_faction_name"),
            "ship_type_id": row.get("victim_ship_type_id"),
            "ship_type_name": row.get("victim_ship_type_name"),
            "ship_group_id": row.get("victim_ship_group_id"),
            "ship_group_name": row.get("victim_ship_group_name"),
            "ship_category_name": row.get("victim_ship_category_name"),
            "damage_taken": row.get("victim_damage_taken"),
        }
    )
    final_blow = _present(
        {
            "character_id": row.get("final_blow_character_id"),
            "character_name": row.get("final_blow_character_name"),
            "corporation_id": row.get("final_blow_corporation_id"),
            "corporation_name": row.get("final_blow_corporation_name"),
            "alliance_id": row.get("final_blow_alliance_id"),
            "alliance_name": row.get("final_blow_alliance_name"),
            "ship_type_id": row.get("final_blow_ship_type_id"),
            "ship_type_name": row.get("final_blow_ship_type_name"),
        }
    )
    attackers = _present({name: list(row.get(f"attacker_{name}") or []) for name in _ATTACKER_LISTS})
    zkb = _present(
        {
            "locationID": row.get("zkb_location_id"),
            "fittedValue": _number(row.get("zkb_fitted_value")),
            "droppedValue": _number(row.get("zkb_dropped_value")),
            "destroyedValue": _number(row.get("zkb_destroyed_value")),
            "totalValue": total,
            "totalDroppableValue": _number(row.get("zkb_droppable_value")),
            "points": row.get("zkb_points"),
            "npc": row.get("zkb_npc"),
            "solo": row.get("zkb_solo"),
            "awox": row.get("zkb_awox"),
            "labels": list(row["zkb_labels"]) if row.get("zkb_labels") is not None else None,
        }
    )
    detail = _present(
        {
            "version": DETAIL_VERSION,
            "killmail_id": killmail_id,
            "killmail_hash": row.get("killmail_hash"),
            "zkb_version": int(row.get("zkb_version") or 0),
            "killmail_time": _iso(row["killmail_time"]),
            "solar_system_id": row.get("solar_system_id"),
            "solar_system_name": row.get("solar_system_name"),
            "security_status": row.get("security_status"),
            "constellation_id": row.get("constellation_id"),
            "constellation_name": row.get("constellation_name"),
            "region_id": row.get("region_id"),
            "region_name": row.get("region_name"),
            "moon_id": row.get("moon_id"),
            "war_id": row.get("war_id"),
            "victim": victim,
            "attacker_count": row.get("attacker_count"),
            "attackers": attackers or None,
            "final_blow": final_blow or None,
            "zkb": zkb or None,
            # EventBridge's numeric matching has been limited to +-5.0e9 (docs/protocols.md,
            # "AWS limits"); kills are worth up to 1e12 ISK and more: patterns compare millions.
            "total_value_millions": None if total is None else round(float(total) / 1e6, 6),
            "zkillboard_url": row.get("zkillboard_url") or f"https://zkillboard.com/kill/{killmail_id}/",
        }
    )
    _fit(detail)
    return KillmailEvent(killmail_id, detail["zkb_version"], detail_type, detail)


def _fit(detail: dict[str, Any]) -> None:
    """Cut the attackers' id lists, longest-first in meaning, until the detail fits an entry."""
    attackers = detail.get("attackers")
    for name in _ATTACKER_LISTS:
        if len(json.dumps(detail, separators=(",", ":"), ensure_ascii=False).encode()) <= MAX_DETAIL_BYTES:
            return
        if attackers and name in attackers:
            del attackers[name]
            attackers["truncated"] = True
