"""Assertions that what PostgreSQL holds equals the source document, field by field.

Rebuilds the ESI document from the killmails/attackers/items rows (not from the jsonb copy)
so a writer that drops, reorders or mangles anything is caught."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

from psycopg2.extras import RealDictCursor

_ESI_KEYS = {"killmail_id", "killmail_time", "solar_system_id", "moon_id", "war_id", "victim", "attackers"}
_OPTIONAL_ATTACKER = ("character_id", "corporation_id", "alliance_id", "faction_id", "ship_type_id", "weapon_type_id")
_ZKB = {
    "locationID": "zkb_location_id",
    "fittedValue": "zkb_fitted_value",
    "droppedValue": "zkb_dropped_value",
    "destroyedValue": "zkb_destroyed_value",
    "totalValue": "zkb_total_value",
    "totalDroppableValue": "zkb_droppable_value",
    "points": "zkb_points",
    "npc": "zkb_npc",
    "solo": "zkb_solo",
    "awox": "zkb_awox",
    "labels": "zkb_labels",
}


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def rebuild_esi(conn, killmail_id: int) -> dict | None:
    with conn.cursor(cursor_factory=RealDictCursor) as cur:
        cur.execute("SELECT * FROM killmails WHERE killmail_id = %s", (killmail_id,))
        km = cur.fetchone()
        if km is None:
            return None
        cur.execute("SELECT * FROM attackers WHERE killmail_id = %s ORDER BY attacker_index", (killmail_id,))
        attackers = cur.fetchall()
        cur.execute("SELECT * FROM items WHERE killmail_id = %s ORDER BY item_index", (killmail_id,))
        items = cur.fetchall()
    nodes: dict[int, dict] = {}
    top: list[dict] = []
    for row in items:
        node = _drop_none(
            {
                "flag": row["flag"],
                "item_type_id": row["item_type_id"],
                "singleton": row["singleton"],
                "quantity_destroyed": row["quantity_destroyed"],
                "quantity_dropped": row["quantity_dropped"],
            }
        )
        nodes[row["item_index"]] = node
        (top if row["parent_index"] is None else nodes[row["parent_index"]].setdefault("items", [])).append(node)
    victim = _drop_none(
        {
            "character_id": km["victim_character_id"],
            "corporation_id": km["victim_corporation_id"],
            "alliance_id": km["victim_alliance_id"],
            "faction_id": km["victim_faction_id"],
            "damage_taken": km["victim_damage_taken"],
            "ship_type_id": km["victim_ship_type_id"],
        }
    )
    if km["position_x"] is not None:
        victim["position"] = {"x": km["position_x"], "y": km["position_y"], "z": km["position_z"]}
    if items:
        victim["items"] = top
    time: datetime = km["killmail_time"]
    return _drop_none(
        {
            "killmail_id": km["killmail_id"],
            "killmail_time": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "solar_system_id": km["solar_system_id"],
            "moon_id": km["moon_id"],
            "war_id": km["war_id"],
            "victim": victim,
            "attackers": [
                {
                    **_drop_none({k: a[k] for k in _OPTIONAL_ATTACKER}),
                    "damage_done": a["damage_done"],
                    "final_blow": a["final_blow"],
                    "security_status": a["security_status"],
                }
                for a in attackers
            ],
        }
    ) | {"_attacker_count": km["attacker_count"], "_esi": km["esi"]}


def normalize_esi(doc: dict) -> dict:
    """ESI's document in the shape rebuild_esi produces: empty item lists mean no items."""
    doc = json.loads(json.dumps(doc))
    # keys outside ESI's schema live only in the jsonb copy, compared separately
    doc = {k: v for k, v in doc.items() if k in _ESI_KEYS}
    victim = doc["victim"]
    if not victim.get("items"):
        victim.pop("items", None)

    def clean(items):
        for item in items:
            if "items" in item and not item["items"]:
                del item["items"]
            elif "items" in item:
                clean(item["items"])

    clean(victim.get("items", []))
    for a in doc["attackers"]:
        a["security_status"] = float(a["security_status"])
    if "position" in victim:
        victim["position"] = {k: float(v) for k, v in victim["position"].items()}
    return doc


def assert_stored_as(
    conn, esi: dict, zkb: dict | None = None, *, killmail_hash: str | None = None, source: str | None = None
) -> None:
    """The rows for esi['killmail_id'] equal the document (and zkb, hash and source, when given)."""
    rebuilt = rebuild_esi(conn, esi["killmail_id"])
    assert rebuilt is not None, f"killmail {esi['killmail_id']} is not stored"
    stored_json = rebuilt.pop("_esi")
    attacker_count = rebuilt.pop("_attacker_count")
    expected = normalize_esi(esi)
    assert rebuilt == expected
    assert attacker_count == len(esi["attackers"])
    document = {k: v for k, v in esi.items() if k != "killmail_hash"}
    assert stored_json == json.loads(json.dumps(document)), "esi jsonb differs from the document"
    if zkb is not None:
        assert_zkb(conn, esi["killmail_id"], zkb)
    if killmail_hash is not None or source is not None:
        with conn.cursor() as cur:
            cur.execute("SELECT killmail_hash, source FROM killmails WHERE killmail_id = %s", (esi["killmail_id"],))
            stored_hash, stored_source = cur.fetchone()
        assert killmail_hash is None or stored_hash == killmail_hash
        assert source is None or stored_source == source


def assert_zkb(conn, killmail_id: int, zkb: dict) -> None:
    with conn.cursor(cursor_factory=RealDictCursor) as cur:
        cur.execute("SELECT * FROM killmails WHERE killmail_id = %s", (killmail_id,))
        row = cur.fetchone()
    for key, column in _ZKB.items():
        expected = zkb.get(key)
        actual = row[column]
        if isinstance(actual, Decimal):
            actual = float(actual)
        if key == "labels" and expected is not None:
            expected = list(expected)
        assert actual == expected, f"{column}: stored {actual!r}, expected {expected!r}"


def count_rows(conn, table: str) -> int:
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")
        return cur.fetchone()[0]
