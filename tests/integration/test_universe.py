"""The universe routes over real HTTP: the local ESI's answers (generated, deterministic, 404 for
unknown ids, its error limit counting them) and the universe client's judgement of each answer."""

from __future__ import annotations

import json
import time

import pytest
import requests

from killstream.errors import TransientError
from killstream.esi import universe
from killstream.esi.universe import Named, Node, UniverseClient, Unresolvable
from killstream_workstation.corpus import generate
from killstream_workstation.simulators.esi import EsiServer
from killstream_workstation.simulators.universe import category_of, constellation_of, group_of, region_of

UA = "killstream-tests/0.1 (tests@example.com)"
DOCS = generate(5)
VICTIM = DOCS[0]["victim"]
SYSTEM = DOCS[0]["solar_system_id"]
SHIP = VICTIM["ship_type_id"]


@pytest.fixture
def esi():
    with EsiServer() as server:
        server.add_many(DOCS)
        yield server


@pytest.fixture
def client(esi):
    return UniverseClient(esi.url, UA, split_pause=0.0, jitter=lambda: 0.5, backoff=0.01)


def soon() -> float:
    return time.monotonic() + 30


def test_the_local_esi_names_every_id_of_its_killmails_and_404s_a_batch_with_an_unknown_one(esi):
    ids = [VICTIM["character_id"], VICTIM["corporation_id"]]
    answer = requests.post(f"{esi.url}/universe/names/", json=ids, timeout=5)
    assert answer.status_code == 200
    assert answer.json() == [
        {
            "id": VICTIM["character_id"],
            "name": esi.universe.name("character", VICTIM["character_id"]),
            "category": "character",
        },
        {
            "id": VICTIM["corporation_id"],
            "name": esi.universe.name("corporation", VICTIM["corporation_id"]),
            "category": "corporation",
        },
    ]
    assert requests.post(f"{esi.url}/universe/names/", json=[*ids, 12345], timeout=5).status_code == 404
    assert requests.post(f"{esi.url}/universe/names/", json=list(range(1, 1002)), timeout=5).status_code == 400
    assert esi.errors_remaining == esi.error_limit - 2  # a names 404 spends the error limit too
    assert esi.names_batches == [ids, [*ids, 12345], list(range(1, 1002))]


def test_the_local_esi_answers_each_chain_from_the_ids_alone(esi):
    def get(kind, id_):
        return requests.get(f"{esi.url}/universe/{kind}/{id_}/", timeout=5).json()

    system = get("systems", SYSTEM)
    assert system["constellation_id"] == constellation_of(SYSTEM) and -1 <= system["security_status"] <= 1
    assert get("constellations", constellation_of(SYSTEM))["region_id"] == region_of(constellation_of(SYSTEM))
    assert get("types", SHIP)["group_id"] == group_of(SHIP)
    assert get("groups", group_of(SHIP))["category_id"] == category_of(group_of(SHIP))
    assert get("systems", SYSTEM) == system  # deterministic
    assert requests.get(f"{esi.url}/universe/systems/31999999/", timeout=5).status_code == 404
    esi.universe.forget(SHIP)
    assert requests.get(f"{esi.url}/universe/types/{SHIP}/", timeout=5).status_code == 404
    assert esi.lookups[("systems", SYSTEM)] == 2 and esi.route_hits["types"] == 2


def test_nodes_are_read_with_their_parent_and_unknown_ids_are_unresolvable(client, esi):
    node = client.node(universe.SYSTEMS, SYSTEM, soon())
    assert isinstance(node, Node) and node.parent_id == constellation_of(SYSTEM)
    assert node.name == esi.universe.name("system", SYSTEM) and node.security_status is not None
    category = client.node(universe.CATEGORIES, category_of(group_of(SHIP)), soon())
    assert isinstance(category, Node) and category.parent_id is None
    unknown = client.node(universe.TYPES, 1, soon())
    assert isinstance(unknown, Unresolvable) and "404" in unknown.reason


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"name": "Jita", "security_status": 0.9}, "a solar system without a constellation"),
        ({"name": "Jita", "constellation_id": 20000020, "security_status": "high"}, "security_status is not a number"),
        ({"name": ["Jita"], "constellation_id": 20000020, "security_status": 0.9}, "the name is not text"),
        ({"system_id": 1, "name": "Jita", "constellation_id": 20000020, "security_status": 0.9}, "answered for"),
        ([1, 2], "not an object"),
    ],
)
def test_a_bad_answer_is_unresolvable_for_that_id_with_the_reason(client, esi, body, problem):
    esi.faults.script(body=json.dumps(body).encode(), when=f"/systems/{SYSTEM}/")
    answer = client.node(universe.SYSTEMS, SYSTEM, soon())
    assert isinstance(answer, Unresolvable) and problem in answer.reason, answer
    assert esi.lookups[("systems", SYSTEM)] == 1  # not retried: it would say the same


def test_names_come_back_for_every_id_asked_in_batches_of_at_most_a_thousand(client, esi):
    ids = sorted(esi.universe.entities)
    answers = list(client.names(ids + ids[:3], soon()))
    assert sorted(a.id for a in answers) == ids and all(isinstance(a, Named) for a in answers)
    assert esi.names_batches == [ids]  # duplicates sent once


def test_a_names_batch_that_stays_malformed_is_transient(client, esi):
    esi.faults.script(body=b'{"not": "a list"}', when="/universe/names/", times=None)
    with pytest.raises(TransientError) as caught:
        list(client.names([VICTIM["character_id"]], soon()))
    assert caught.value.error_type == "esi_unavailable" and esi.route_hits["names"] == 3


def test_a_lone_unknown_id_is_unresolvable_after_one_call(client, esi):
    (answer,) = client.names([424242], soon())
    assert isinstance(answer, Unresolvable) and "404" in answer.reason and esi.route_hits["names"] == 1
