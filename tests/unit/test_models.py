import copy
import json

import pytest

from killstream.errors import InvalidPackage, KillmailValidationError
from killstream.killmail import parse_killmail, parse_zkb
from killstream.package import Package
from killstream_workstation import corpus

MINIMAL = {
    "killmail_id": 131234567,
    "killmail_time": "2026-11-01T12:00:00Z",
    "solar_system_id": 30000142,
    "victim": {"damage_taken": 100, "ship_type_id": 587},
    "attackers": [{"damage_done": 100, "final_blow": True, "security_status": -1.5}],
}


def test_every_real_killmail_parses(real_killmails):
    for doc in real_killmails:
        esi, _ = corpus.split_hash(doc)
        killmail = parse_killmail(esi)
        assert killmail.killmail_id == doc["killmail_id"]
        assert len(killmail.attackers) == len(doc["attackers"])


def test_minimal_killmail_parses_with_optional_fields_absent():
    km = parse_killmail(MINIMAL)
    assert km.position is None and km.items == () and km.moon_id is None
    assert km.attackers[0].character_id is None
    assert km.killmail_time.isoformat() == "2026-11-01T12:00:00+00:00"


def test_items_are_flattened_in_pre_order_with_parent_indexes():
    doc = copy.deepcopy(MINIMAL)
    doc["victim"]["items"] = [
        {"flag": 5, "item_type_id": 1, "singleton": 0, "quantity_dropped": 1},
        {
            "flag": 5,
            "item_type_id": 2,
            "singleton": 0,
            "quantity_destroyed": 1,
            "items": [
                {"flag": 5, "item_type_id": 3, "singleton": 0, "quantity_dropped": 7},
                {"flag": 5, "item_type_id": 4, "singleton": 0, "quantity_dropped": 8},
            ],
        },
        {"flag": 6, "item_type_id": 5, "singleton": 1},
    ]
    items = parse_killmail(doc).items
    assert [(i.index, i.parent_index, i.item_type_id) for i in items] == [
        (0, None, 1),
        (1, None, 2),
        (2, 1, 3),
        (3, 1, 4),
        (4, None, 5),
    ]


def _mutated(path, value, delete=False):
    doc = copy.deepcopy(MINIMAL)
    *parents, last = path
    target = doc
    for key in parents:
        target = target[key]
    if delete:
        del target[last]
    else:
        target[last] = value
    return doc


@pytest.mark.parametrize(
    "path, value, delete, field",
    [
        (("killmail_id",), None, True, "killmail_id"),
        (("killmail_id",), "131234567", False, "killmail_id"),
        (("killmail_id",), -5, False, "killmail_id"),
        (("killmail_id",), True, False, "killmail_id"),
        (("killmail_time",), "yesterday", False, "killmail_time"),
        (("killmail_time",), 1767225600, False, "killmail_time"),
        (("solar_system_id",), 3.5, False, "solar_system_id"),
        (("victim",), None, True, "victim"),
        (("victim", "damage_taken"), -1, False, "victim.damage_taken"),
        (("victim", "ship_type_id"), None, True, "victim.ship_type_id"),
        (("victim", "position"), {"x": 1.0, "y": float("nan"), "z": 0.0}, False, "victim.position.y"),
        (("victim", "position"), {"x": 1.0, "y": 2.0}, False, "victim.position.z"),
        (("victim", "character_id"), True, False, "victim.character_id"),
        (("attackers",), {"not": "a list"}, False, "attackers"),
        (("attackers", 0, "damage_done"), -3, False, "attackers[0].damage_done"),
        (("attackers", 0, "final_blow"), 1, False, "attackers[0].final_blow"),
        (("attackers", 0, "security_status"), float("inf"), False, "attackers[0].security_status"),
        (("attackers", 0, "security_status"), False, False, "attackers[0].security_status"),
        (("attackers", 0, "character_id"), 2**64, False, "attackers[0].character_id"),
        (("victim", "items"), [{"flag": 5, "singleton": 0}], False, "victim.items[0].item_type_id"),
        # every field the inline test of a plain attacker or item reads, refused as the checked path refuses it
        (("attackers", 0, "security_status"), float("nan"), False, "attackers[0].security_status"),
        (("attackers", 0, "security_status"), "-1.5", False, "attackers[0].security_status"),
        (("attackers", 0, "damage_done"), 2**63, False, "attackers[0].damage_done"),
        (("attackers", 0, "damage_done"), None, False, "attackers[0].damage_done"),
        (("attackers", 0, "weapon_type_id"), -1, False, "attackers[0].weapon_type_id"),
        (("attackers", 0, "ship_type_id"), False, False, "attackers[0].ship_type_id"),
        (("attackers", 0), ["not", "an object"], False, "attackers[0]"),
        (("victim", "items"), [{"item_type_id": 34, "flag": 2**31, "singleton": 0}], False, "victim.items[0].flag"),
        (("victim", "items"), [{"item_type_id": 34, "flag": 5, "singleton": True}], False, "victim.items[0].singleton"),
        (
            ("victim", "items"),
            [{"item_type_id": 34, "flag": 5, "singleton": 0, "quantity_dropped": -2}],
            False,
            "victim.items[0].quantity_dropped",
        ),
        (
            ("victim", "items"),
            [{"item_type_id": 34, "flag": 5, "singleton": 0, "quantity_destroyed": 1.0}],
            False,
            "victim.items[0].quantity_destroyed",
        ),
        (
            ("victim", "items"),
            [
                {"item_type_id": 1, "flag": 5, "singleton": 0},
                {
                    "item_type_id": 2,
                    "flag": 5,
                    "singleton": 0,
                    "items": [{"item_type_id": 3, "flag": -1, "singleton": 0}],
                },
            ],
            False,
            "victim.items[1].items[0].flag",
        ),
    ],
)
def test_bad_input_names_the_field(path, value, delete, field):
    with pytest.raises(KillmailValidationError) as excinfo:
        parse_killmail(_mutated(path, value, delete))
    assert excinfo.value.field == field
    assert field in str(excinfo.value)


def test_too_many_items_is_refused():
    items = [{"flag": 5, "item_type_id": 34, "singleton": 0}] * 10_001
    with pytest.raises(KillmailValidationError, match="more than 10000 items"):
        parse_killmail(_mutated(("victim", "items"), items))


def test_deep_nesting_is_refused_but_eight_levels_are_kept():
    def nested(depth):
        item = {"flag": 5, "item_type_id": 1, "singleton": 0}
        if depth > 1:
            item["items"] = [nested(depth - 1)]
        return item

    assert len(parse_killmail(_mutated(("victim", "items"), [nested(8)])).items) == 8
    with pytest.raises(KillmailValidationError, match="nested deeper"):
        parse_killmail(_mutated(("victim", "items"), [nested(9)]))


def test_documents_postgres_cannot_store_are_refused():
    with pytest.raises(KillmailValidationError, match="U\\+0000"):
        parse_killmail(_mutated(("note",), "a\x00b"))
    with pytest.raises(KillmailValidationError, match="cannot be stored"):
        parse_killmail(_mutated(("note",), "\ud800"))
    # a literal backslash-u0000 text is fine: it is not a NUL
    assert parse_killmail(_mutated(("note",), "\\u0000")).document["note"] == "\\u0000"


def test_document_json_round_trips():
    doc = _mutated(("victim", "position"), {"x": 2453960913317.9897, "y": -3.0e-7, "z": 0})
    assert json.loads(parse_killmail(doc).document_json) == doc


def test_zkb_parses_all_optional_and_rejects_wrong_types():
    zkb = parse_zkb({"locationID": 40009082, "totalValue": 1.26e8, "npc": False, "labels": ["pvp"]})
    assert zkb.location_id == 40009082 and str(zkb.total_value) == "126000000.0"
    assert zkb.fitted_value is None and zkb.labels == ("pvp",)
    assert parse_zkb({}).total_value is None
    for bad, field in [
        ({"npc": 0}, "zkb.npc"),
        ({"totalValue": "1"}, "zkb.totalValue"),
        ({"totalValue": -1.0}, "zkb.totalValue"),
        ({"labels": [1]}, "zkb.labels[0]"),
        ({"points": True}, "zkb.points"),
    ]:
        with pytest.raises(KillmailValidationError) as excinfo:
            parse_zkb(bad)
        assert excinfo.value.field == field


def test_values_the_integer_columns_cannot_hold_are_refused():
    item = {"flag": 5, "item_type_id": 34, "singleton": 2**62}
    with pytest.raises(KillmailValidationError) as excinfo:
        parse_killmail(_mutated(("victim", "items"), [item]))
    assert excinfo.value.field == "victim.items[0].singleton"
    with pytest.raises(KillmailValidationError) as excinfo:
        parse_zkb({"points": 2**31})
    assert excinfo.value.field == "zkb.points"


def test_integers_beyond_a_double_are_a_validation_error_not_a_crash():
    with pytest.raises(KillmailValidationError) as excinfo:
        parse_killmail(_mutated(("attackers", 0, "security_status"), 10**400))
    assert excinfo.value.field == "attackers[0].security_status"
    with pytest.raises(KillmailValidationError):
        parse_zkb({"totalValue": 10**400})


def test_deeply_nested_bodies_are_invalid_packages():
    with pytest.raises(InvalidPackage):
        Package.from_body("[" * 100_000 + "]" * 100_000)


def test_values_outside_the_plain_shape_are_still_accepted_as_before():
    """An integer security status, an attacker without any id, an item with an explicit null
    quantity: valid, though not the shape ESI usually sends."""
    doc = _mutated(("attackers",), [{"damage_done": 0, "final_blow": False, "security_status": 5}])
    doc["victim"]["items"] = [
        {"item_type_id": 34, "flag": 5, "singleton": 0, "quantity_destroyed": None, "quantity_dropped": 3},
        {"item_type_id": 35, "flag": 5, "singleton": 0, "items": [{"item_type_id": 36, "flag": 0, "singleton": 1}]},
    ]
    km = parse_killmail(doc)
    [attacker] = km.attackers
    assert attacker.security_status == 5.0 and type(attacker.security_status) is float
    assert attacker.character_id is None and attacker.weapon_type_id is None
    assert [(i.index, i.parent_index, i.item_type_id, i.quantity_dropped) for i in km.items] == [
        (0, None, 34, 3),
        (1, None, 35, None),
        (2, 1, 36, None),
    ]


def test_a_nul_escape_behind_escaped_backslashes_is_found():
    """The substring test first, then the escape count: a NUL after an even run of backslashes
    is a NUL; after an odd run it is literal text."""
    with pytest.raises(KillmailValidationError, match="U\\+0000"):
        parse_killmail(_mutated(("note",), "\\\x00"))
    assert parse_killmail(_mutated(("note",), "\\\\u0000")).document["note"] == "\\\\u0000"


TRICKY_BODIES = [
    # whitespace anywhere JSON allows it, keys in any order, the esi first or last
    ' {\n "esi" : {"killmail_id": 1, "note": "a,}b\\"c"} ,\t"killmail_id":1,"hash":"' + "a" * 40 + '",'
    '"zkb":{"esi":{"x":1}},"source":"r2z2"}\r\n',
    '{"killmail_id":1,"hash":"' + "a" * 40 + '","zkb":{},"source":"r2z2","esi":{"killmail_id":1,"v":[1,2.5e3,null]}}',
    # a key given twice: the last wins, as in json.loads
    '{"esi":{"killmail_id":2},"killmail_id":1,"hash":"'
    + "a" * 40
    + '","zkb":{},"source":"r2z2","esi":{"killmail_id":1}}',
    '{"killmail_id":1,"hash":"' + "a" * 40 + '","zkb":{},"source":"r2z2"}',
]


@pytest.mark.parametrize("text", TRICKY_BODIES)
def test_a_body_reads_as_json_loads_reads_it_and_keeps_the_esi_text(text):
    package = Package.from_body(text)
    assert package == Package.from_body(json.loads(text))
    if package.esi is None:
        assert package.esi_json is None
    else:
        assert package.esi_json is not None and json.loads(package.esi_json) == package.esi


@pytest.mark.parametrize("text", ['{"killmail_id":1}x', "[1]", '{"a":1,}', '{"a" 1}', "", '{"a":1'])
def test_a_body_that_is_no_json_object_is_refused_as_before(text):
    with pytest.raises(InvalidPackage):
        Package.from_body(text)


def test_the_kept_esi_text_is_stored_only_when_plainly_storable():
    """The body's own text of the esi is stored as it is; text holding what jsonb refuses (a
    NUL escape, NaN) is serialized again and refused there, with the same errors as before."""
    doc = copy.deepcopy(MINIMAL)
    body = json.dumps({"killmail_id": 131234567, "hash": "a" * 40, "zkb": {}, "source": "r2z2", "esi": doc}, indent=1)
    package = Package.from_body(body)
    assert parse_killmail(package.esi, package.esi_json).document_json == package.esi_json
    for bad, error in (('"a\\u0000b"', "U\\+0000"), ("NaN", "cannot be stored"), ('"\\ud800"', "cannot be stored")):
        text = body.replace('"killmail_time"', f'"note": {bad}, "killmail_time"')
        package = Package.from_body(text)
        with pytest.raises(KillmailValidationError, match=error):
            parse_killmail(package.esi, package.esi_json)
