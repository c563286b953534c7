"""ESI's universe routes, for the enricher (docs/protocols.md, "ESI", "Universe routes"):
`POST /universe/names/` for characters, corporations, alliances and factions, and the GET routes
of solar systems, constellations, regions, types, groups and categories.

Every id ends as an answer: a name (`Named`, `Node`), or `Unresolvable` with the reason — ESI
does not know it, or its answer for that id is unusable (a name that is not text, a category we
do not know, a system without a constellation). Only what cannot be judged now raises: a
`TransientError` (ESI down, limits, no time left) leaves the ids for a later run."""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from killstream.errors import EsiStatusError, TransientError
from killstream.esi.client import EsiClient, read_json
from killstream.http import bounded

NAMES_PATH = "/universe/names/"
NAMES_BATCH = 1000  # ids per POST /universe/names/ at most
NAME_CATEGORIES = frozenset(
    {
        "character",
        "corporation",
        "alliance",
        "faction",
        "inventory_type",
        "solar_system",
        "constellation",
        "region",
        "station",
    }
)
# A GET for an id ESI does not have (400: not an id it accepts): asking again will not help.
UNKNOWN_ID_STATUSES = frozenset({400, 404, 422})
# A split 404 batch spends the error limit: keep this many errors of it for the fetcher.
SPLIT_ERROR_RESERVE = 20
SPLIT_PAUSE_SECONDS = 0.1
MAX_NAME_LENGTH = 1000


@dataclass(frozen=True)
class Named:
    id: int
    name: str
    category: str


@dataclass(frozen=True)
class Unresolvable:
    id: int
    reason: str


@dataclass(frozen=True)
class Route:
    """`GET /universe/{kind}/{id}/`: what its answer must hold besides `name`."""

    kind: str
    noun: str
    id_field: str
    parent_field: str | None = None
    parent_noun: str | None = None
    has_security: bool = False


SYSTEMS = Route("systems", "solar system", "system_id", "constellation_id", "constellation", has_security=True)
CONSTELLATIONS = Route("constellations", "constellation", "constellation_id", "region_id", "region")
REGIONS = Route("regions", "region", "region_id")
TYPES = Route("types", "type", "type_id", "group_id", "group")
GROUPS = Route("groups", "group", "group_id", "category_id", "category")
CATEGORIES = Route("categories", "category", "category_id")


@dataclass(frozen=True)
class Node:
    """One GET answer: the id's name and its parent's id (a system's constellation, a type's
    group; None at the top), with a system's security status."""

    id: int
    name: str
    parent_id: int | None
    security_status: float | None = None


class UniverseClient(EsiClient):
    """The universe routes over the shared client core (limits, retries, deadlines)."""

    def __init__(
        self,
        base_url: str,
        user_agent: str,
        *,
        split_pause: float = SPLIT_PAUSE_SECONDS,
        split_error_reserve: int = SPLIT_ERROR_RESERVE,
        **options: Any,
    ):
        super().__init__(base_url, user_agent, **options)
        self.split_pause = split_pause
        self.split_error_reserve = split_error_reserve

    def node(self, route: Route, id_: int, deadline: float) -> Node | Unresolvable:
        try:
            doc = self.call("GET", f"/universe/{route.kind}/{id_}/", deadline, read_json)
        except EsiStatusError as exc:
            if exc.status in UNKNOWN_ID_STATUSES:
                return Unresolvable(id_, f"{route.noun} {id_}: {exc}")
            raise TransientError("esi_error", f"{route.noun} {id_}: {exc}") from None
        except RecursionError:
            return Unresolvable(id_, f"{route.noun} {id_}: ESI's answer is JSON nested too deeply")
        return _node(route, id_, doc)

    def names(self, ids: Sequence[int], deadline: float) -> Iterator[Named | Unresolvable]:
        """Every id's answer, in batches of ≤ NAMES_BATCH. One unknown id fails its whole batch
        with 404: the batch is split in halves until the unknown ids stand alone. A half is not
        asked when the answers already prove it holds the unknown id (its parent failed, its
        sibling did not), and a lone id so proven is unresolvable without a call of its own."""
        unique = sorted(set(ids))
        for start in range(0, len(unique), NAMES_BATCH):
            yield from self._names(unique[start : start + NAMES_BATCH], deadline, proven_bad=False, split=False)

    def _names(
        self, batch: list[int], deadline: float, *, proven_bad: bool, split: bool
    ) -> Generator[Named | Unresolvable, None, bool]:
        """Yields the batch's answers; returns whether it held an id ESI does not know."""
        if not proven_bad:
            if split:
                self._before_split(deadline)
            try:
                answer = self.call("POST", NAMES_PATH, deadline, _names_list, body=batch)
            except EsiStatusError as exc:
                if exc.status != 404:
                    raise TransientError("esi_error", f"{NAMES_PATH}: {exc}") from None
                excerpt = f"404: {exc.excerpt}"
            except RecursionError:
                raise TransientError("esi_error", f"{NAMES_PATH}: JSON nested too deeply") from None
            else:
                yield from _named(answer, batch)
                return False
        else:
            excerpt = "its batch failed with 404 and the rest of it did not"
        if len(batch) == 1:
            yield Unresolvable(batch[0], f"{NAMES_PATH} does not know it ({excerpt})")
            return True
        middle = len(batch) // 2
        first_bad = yield from self._names(batch[:middle], deadline, proven_bad=False, split=True)
        yield from self._names(batch[middle:], deadline, proven_bad=not first_bad, split=True)
        return True

    def _before_split(self, deadline: float) -> None:
        """Splits are paced, and stop while little of the error limit is left: each 404 spends
        it, and the fetcher needs it too. The ids left wait for a later run."""
        remaining = self.errors_remaining
        if remaining is not None and remaining <= self.split_error_reserve:
            self._count("rate_limited")
            raise TransientError(
                "esi_error_limited", f"only {remaining:.0f} of ESI's error limit left: splitting waits for a later run"
            )
        if self._clock() + self.split_pause > deadline:
            raise TransientError("out_of_time", "no time left to split a failed names batch")
        self._sleep(self.split_pause)


def _names_list(response: bounded.Answer) -> list:
    answer = read_json(response)
    if not isinstance(answer, list):
        # the same as a cut-off body: retried, and a transient failure if it stays so
        raise ValueError(f"{NAMES_PATH} answered {type(answer).__name__}, not a list")
    return answer


def _named(answer: list, batch: list[int]) -> Iterator[Named | Unresolvable]:
    asked = set(batch)
    for item in answer:
        id_ = item.get("id") if isinstance(item, dict) else None
        if not _is_id(id_) or id_ not in asked:
            continue  # not an answer to any id asked: those ids are left out, below
        asked.discard(id_)
        name, category = item.get("name"), item.get("category")
        problem = _text_problem(name)
        if problem:
            yield Unresolvable(id_, f"{NAMES_PATH}: the name {problem}")
        elif category not in NAME_CATEGORIES:
            yield Unresolvable(id_, f"{NAMES_PATH}: a category we do not know: {category!r}")
        else:
            yield Named(id_, name, category)
    for id_ in sorted(asked):
        yield Unresolvable(id_, f"{NAMES_PATH}: ESI's answer left it out")


def _node(route: Route, id_: int, doc: Any) -> Node | Unresolvable:
    what = f"{route.noun} {id_}"
    if not isinstance(doc, dict):
        return Unresolvable(id_, f"{what}: ESI's answer is {type(doc).__name__}, not an object")
    answered = doc.get(route.id_field)
    if answered is not None and answered != id_:
        return Unresolvable(id_, f"{what}: ESI answered for {route.id_field} {answered!r}")
    problem = _text_problem(doc.get("name"))
    if problem:
        return Unresolvable(id_, f"{what}: the name {problem}")
    parent = None
    if route.parent_field:
        parent = doc.get(route.parent_field)
        if not _is_id(parent):
            missing = f"a {route.noun} without a {route.parent_noun}"
            return Unresolvable(id_, f"{what}: {missing} ({route.parent_field}: {parent!r})")
    security = None
    if route.has_security:
        security = doc.get("security_status")
        if isinstance(security, bool) or not isinstance(security, int | float) or not math.isfinite(security):
            return Unresolvable(id_, f"{what}: security_status is not a number: {security!r}")
        security = float(security)
    return Node(id_, doc["name"], parent, security)


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63


def _text_problem(value: Any) -> str | None:
    """Why `value` cannot be stored as a name, or None when it can."""
    if not isinstance(value, str):
        return f"is not text: {value!r}"[:200]
    if not value.strip():
        return "is blank"
    if len(value) > MAX_NAME_LENGTH:
        return f"is {len(value)} characters long"
    if "\x00" in value:
        return "holds a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode (a lone surrogate)"
    return None
