"""The killmail event contract (docs/events.md) and PutEvents' limits, without AWS: a stored
killmail's row becomes the documented detail, under ESI's and zKillboard's names, with what is
unknown absent; the bus splits entries as EventBridge counts them and reports every entry."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from botocore.exceptions import EndpointConnectionError

from killstream.events.bus import MAX_BYTES, EventBus, entry_bytes
from killstream.events.detail import DETAIL_VERSION, MAX_DETAIL_BYTES, SOURCE, STORED, UPDATED, killmail_event

ROW = {
    "killmail_id": 131234567,
    "killmail_hash": "8f2c" * 10,
    "killmail_time": datetime(2026, 11, 30, 21, 14, 9, tzinfo=UTC),
    "solar_system_id": 30000142,
    "solar_system_name": "Jita",
    "security_status": 0.9459,
    "constellation_id": 20000020,
    "constellation_name": "Kimotoro",
    "region_id": 10000002,
    "region_name": "The Forge",
    "moon_id": None,
    "war_id": None,
    "victim_character_id": 2112547115,
    "victim_character_name": "Some Pilot",
    "victim_corporation_id": 98000001,
    "victim_corporation_name": "Some Corp",
    "victim_alliance_id": None,
    "victim_alliance_name": None,
    "victim_faction_id": None,
    "victim_faction_name": None,
    "victim_ship_type_id": 11567,
    "victim_ship_type_name": "Avatar",
    "victim_ship_group_id": 30,
    "victim_ship_group_name": "Titan",
    "victim_ship_category_name": "Ship",
    "victim_damage_taken": 123456,
    "attacker_count": 3,
    "final_blow_character_id": 90000001,
    "final_blow_character_name": None,
    "final_blow_corporation_id": 98000002,
    "final_blow_corporation_name": "Other Corp",
    "final_blow_alliance_id": 99000001,
    "final_blow_alliance_name": None,
    "final_blow_ship_type_id": 11567,
    "final_blow_ship_type_name": "Avatar",
    "zkb_location_id": 40009082,
    "zkb_fitted_value": Decimal("120000000.0"),
    "zkb_dropped_value": Decimal("31000000"),
    "zkb_destroyed_value": Decimal("95000000.5"),
    "zkb_total_value": Decimal("102345678901.25"),
    "zkb_points": 9,
    "zkb_npc": False,
    "zkb_solo": False,
    "zkb_droppable_value": Decimal("31000000.00"),
    "zkb_awox": False,
    "zkb_labels": ["cat:6", "pvp", "loc:highsec"],
    "zkillboard_url": "https://zkillboard.com/kill/131234567/",
    "zkb_version": 0,
    "published_version": None,
    "attacker_character_ids": [90000001, 90000002],
    "attacker_corporation_ids": [98000002],
    "attacker_alliance_ids": [99000001],
    "attacker_faction_ids": None,
    "attacker_ship_type_ids": [587, 11567],
}


def test_a_stored_killmail_becomes_the_documented_detail():
    event = killmail_event(ROW)
    assert (event.detail_type, event.killmail_id, event.zkb_version) == (STORED, 131234567, 0)
    d = event.detail
    assert d["version"] == DETAIL_VERSION and d["killmail_time"] == "2026-11-30T21:14:09Z"
    assert (d["solar_system_id"], d["region_id"], d["region_name"]) == (30000142, 10000002, "The Forge")
    assert d["victim"] == {
        "character_id": 2112547115,
        "character_name": "Some Pilot",
        "corporation_id": 98000001,
        "corporation_name": "Some Corp",
        "ship_type_id": 11567,
        "ship_type_name": "Avatar",
        "ship_group_id": 30,
        "ship_group_name": "Titan",
        "ship_category_name": "Ship",
        "damage_taken": 123456,
    }  # no alliance: absent, not null
    assert d["attackers"] == {
        "character_ids": [90000001, 90000002],
        "corporation_ids": [98000002],
        "alliance_ids": [99000001],
        "ship_type_ids": [587, 11567],
    }
    assert d["final_blow"] == {
        "character_id": 90000001,
        "corporation_id": 98000002,
        "corporation_name": "Other Corp",
        "alliance_id": 99000001,
        "ship_type_id": 11567,
        "ship_type_name": "Avatar",
    }
    assert d["zkb"]["totalValue"] == 102345678901.25 and d["zkb"]["droppedValue"] == 31000000
    assert d["zkb"]["totalDroppableValue"] == 31000000
    assert d["zkb"]["labels"] == ["cat:6", "pvp", "loc:highsec"] and d["zkb"]["npc"] is False
    assert d["total_value_millions"] == 102345.678901
    assert d["zkillboard_url"] == "https://zkillboard.com/kill/131234567/"
    assert "moon_id" not in d and "war_id" not in d
    assert json.loads(event.detail_json) == d  # plain JSON: no Decimal, no datetime left


def test_a_published_killmail_whose_zkb_changed_is_an_update_with_its_version():
    event = killmail_event({**ROW, "published_version": 0, "zkb_version": 2})
    assert (event.detail_type, event.zkb_version, event.detail["zkb_version"]) == (UPDATED, 2, 2)
    assert killmail_event({**ROW, "published_version": 0}, STORED).detail_type == STORED  # asked for


def test_what_the_enricher_has_not_named_yet_is_absent():
    unnamed = {key: (None if key.endswith("_name") else value) for key, value in ROW.items()}
    unnamed |= {"region_id": None, "constellation_id": None, "security_status": None, "victim_ship_group_id": None}
    d = killmail_event(unnamed).detail
    assert not [key for key in d if key.endswith("_name")] and "region_id" not in d
    assert not [key for key in d["victim"] if key.endswith("_name")] and "ship_group_id" not in d["victim"]
    assert d["victim"]["ship_type_id"] == 11567 and d["solar_system_id"] == 30000142


def test_a_killmail_with_a_hundred_thousand_attackers_still_fits_an_entry():
    many = list(range(90_000_000, 90_100_000))
    event = killmail_event({**ROW, "attacker_character_ids": many, "attacker_corporation_ids": many[:5000]})
    assert len(event.detail_json.encode()) <= MAX_DETAIL_BYTES
    attackers = event.detail["attackers"]
    assert attackers["truncated"] is True and "character_ids" not in attackers
    assert attackers["alliance_ids"] == [99000001]  # the short lists stay
    assert entry_bytes(EventBus("bus").entry(event)) < MAX_BYTES


class FakeEvents:
    """PutEvents as EventBridge answers it: per-entry results; `refuse(entry)` fails an entry,
    `call_errors` whole calls."""

    def __init__(self, refuse=lambda entry: False, call_errors: int = 0):
        self.calls: list[list[dict]] = []
        self.refuse = refuse
        self.call_errors = call_errors

    def put_events(self, Entries):
        self.calls.append(Entries)
        if self.call_errors:
            self.call_errors -= 1
            raise EndpointConnectionError(endpoint_url="https://events.example")
        return {
            "FailedEntryCount": sum(map(self.refuse, Entries)),
            "Entries": [
                {"ErrorCode": "InternalFailure", "ErrorMessage": "try again"} if self.refuse(e) else {"EventId": "x"}
                for e in Entries
            ],
        }


def events(count: int, padding: int = 0):
    return [killmail_event({**ROW, "killmail_id": n, "victim_character_name": "x" * padding}) for n in range(count)]


def test_put_events_sends_at_most_ten_entries_and_256_kb_a_call_with_every_entry_s_result():
    client = FakeEvents(refuse=lambda entry: json.loads(entry["Detail"])["killmail_id"] == 13)
    bus = EventBus("killstream-dev-killmails", client)
    refused = bus.put(events(25))
    assert [len(call) for call in client.calls] == [10, 10, 5]
    assert all(
        e["Source"] == SOURCE and e["EventBusName"] == "killstream-dev-killmails" for c in client.calls for e in c
    )
    assert [n for n, reason in enumerate(refused) if reason] == [13] and "InternalFailure" in refused[13]

    client = FakeEvents()
    big = events(6, padding=60_000)  # ~61 KB each: four to a call
    assert EventBus("bus", client).put(big) == [None] * 6
    assert [len(call) for call in client.calls] == [4, 2]
    assert all(sum(map(entry_bytes, call)) <= MAX_BYTES for call in client.calls)


def test_a_call_that_fails_as_a_whole_refuses_only_its_own_entries():
    client = FakeEvents(call_errors=1)
    refused = EventBus("bus", client).put(events(12))
    assert all(refused[:10]) and refused[10:] == [None, None]
    assert "PutEvents failed" in refused[0]


@pytest.mark.parametrize("time_field", [False, True])
def test_entry_size_is_counted_as_aws_counts_it(time_field):
    entry = {"Source": "killstream", "DetailType": "Killmail Stored", "Detail": '{"a":"é"}', "Resources": ["r"]}
    if time_field:
        entry["Time"] = datetime.now(UTC)
    assert entry_bytes(entry) == len("killstream") + len("Killmail Stored") + len('{"a":"é"}'.encode()) + 1 + (
        14 if time_field else 0
    )
