"""Sample killmails: real ESI documents from the folder $KILLSTREAM_CORPUS names, else generated
ones of the same shape; and re-numbering them into as many distinct killmails as a test or
benchmark needs. The product needs no folder: without one, everything here is generated."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

CORPUS_ENV = "KILLSTREAM_CORPUS"


def repo_root() -> Path:
    """The checkout this package was installed from (editable install)."""
    return Path(__file__).resolve().parents[2]


def default_corpus_dir() -> Path | None:
    """The folder of real killmails $KILLSTREAM_CORPUS names, when it holds any."""
    value = os.environ.get(CORPUS_ENV, "").strip()
    if not value:
        return None
    path = Path(value)
    return path if path.is_dir() and any(path.glob("*.json")) else None


def load_dir(path: str | os.PathLike) -> list[dict]:
    """Every `*.json` killmail in a folder, in id order. Each keeps its `killmail_hash` key."""
    docs = [json.loads(p.read_text()) for p in Path(path).glob("*.json")]
    return sorted(docs, key=lambda d: d["killmail_id"])


def load_real() -> list[dict] | None:
    path = default_corpus_dir()
    return load_dir(path) if path else None


def split_hash(doc: dict) -> tuple[dict, str]:
    """(ESI document exactly as ESI serves it, its hash)."""
    esi = {k: v for k, v in doc.items() if k != "killmail_hash"}
    return esi, doc["killmail_hash"]


def fake_hash(killmail_id: int, salt: str = "") -> str:
    return hashlib.sha1(f"{killmail_id}:{salt}".encode()).hexdigest()


def generate(count: int, seed: int = 7) -> list[dict]:
    """Killmails shaped like ESI's, for machines without the real corpus."""
    rng = random.Random(seed)
    docs = []
    for n in range(count):
        killmail_id = 120_000_000 + n
        attackers = [
            {
                "character_id": 90_000_000 + rng.randrange(10**6),
                "corporation_id": 98_000_000 + rng.randrange(10**5),
                "alliance_id": 99_000_000 + rng.randrange(10**4),
                "damage_done": rng.randrange(1, 5000),
                "final_blow": i == 0,
                "security_status": round(rng.uniform(-10, 5), 1),
                "ship_type_id": rng.choice([587, 11379, 17738, 22456]),
                "weapon_type_id": rng.choice([2873, 3001, 2456]),
            }
            for i in range(rng.choice([1, 1, 2, 5, 12, 40]))
        ]
        if rng.random() < 0.2:
            attackers.append(
                {
                    "corporation_id": 1000125,
                    "damage_done": 10,
                    "final_blow": False,
                    "security_status": 0.0,
                    "ship_type_id": 34495,
                }
            )
        items = []
        for _ in range(rng.randrange(0, 30)):
            item: dict[str, Any] = {
                "flag": rng.choice([5, 11, 12, 27, 87]),
                "item_type_id": rng.randrange(100, 60000),
                "singleton": 0,
                rng.choice(["quantity_destroyed", "quantity_dropped"]): rng.randrange(1, 500),
            }
            if rng.random() < 0.05:
                item["items"] = [{"flag": 5, "item_type_id": 34, "singleton": 0, "quantity_dropped": 1000}]
            items.append(item)
        victim = {
            "character_id": 90_000_000 + rng.randrange(10**6),
            "corporation_id": 98_000_000 + rng.randrange(10**5),
            "damage_taken": sum(a["damage_done"] for a in attackers),
            "ship_type_id": rng.choice([587, 621, 24690, 28352]),
            "items": items,
            "position": {"x": rng.uniform(-1e12, 1e12), "y": rng.uniform(-1e11, 1e11), "z": rng.uniform(-1e12, 1e12)},
        }
        docs.append(
            {
                "attackers": attackers,
                "killmail_hash": fake_hash(killmail_id),
                "killmail_id": killmail_id,
                "killmail_time": f"2026-11-{1 + n % 28:02d}T{n % 24:02d}:{n % 60:02d}:{(n * 7) % 60:02d}Z",
                "solar_system_id": 30_000_000 + rng.randrange(5000),
                "victim": victim,
            }
        )
    return docs


def sample(minimum: int = 0) -> list[dict]:
    """The real corpus, or a generated one, with at least `minimum` documents (re-numbered)."""
    docs = load_real() or generate(106)
    return renumber(docs, minimum) if minimum > len(docs) else docs


def renumber(docs: list[dict], count: int, first_id: int = 200_000_000) -> list[dict]:
    """`count` distinct killmails made by cycling through `docs` with fresh ids and hashes."""
    out = []
    for n in range(count):
        doc = copy.deepcopy(docs[n % len(docs)])
        doc["killmail_id"] = first_id + n
        doc["killmail_hash"] = fake_hash(first_id + n, "renumbered")
        out.append(doc)
    return out


def zkb_for(doc: dict, rng: random.Random | None = None) -> dict:
    """A zkb block like zKillboard's for a killmail, values derived from the document."""
    rng = rng or random.Random(doc["killmail_id"])
    fitted = round(rng.uniform(1e5, 5e9), 2)
    dropped = round(fitted * rng.uniform(0, 0.6), 2)
    destroyed = round(fitted - dropped, 2)
    # A replayed file may lack a usable attackers list: the fetcher's validation names that later.
    listed = doc.get("attackers")
    attackers = [a for a in listed if isinstance(a, dict)] if isinstance(listed, list) else []
    npc = all("character_id" not in a for a in attackers)
    killmail_id, killmail_hash = doc["killmail_id"], doc["killmail_hash"]
    return {
        "locationID": 40_000_000 + rng.randrange(10**6),
        "hash": killmail_hash,
        "fittedValue": fitted,
        "droppedValue": dropped,
        "destroyedValue": destroyed,
        "totalValue": round(fitted + rng.uniform(0, 1e6), 2),
        "totalDroppableValue": dropped,
        "points": rng.randrange(1, 100),
        "npc": npc,
        "solo": len(attackers) == 1 and not npc,
        "awox": False,
        "labels": [
            "cat:6",
            "npc" if npc else "pvp",
            rng.choice(["loc:highsec", "loc:lowsec", "loc:nullsec", "loc:w-space"]),
        ],
        "attackerCount": len(attackers),
        "href": f"https://esi.evetech.net/killmails/{killmail_id}/{killmail_hash}/",
    }


def on_days(docs: list[dict], days: list[date], seed: int = 3) -> list[dict]:
    """Copies of `docs` whose killmail times fall on `days` (UTC), in order: the first share of
    the documents on the first day, and so on, each at a time of that day rising with its place."""
    rng = random.Random(seed)
    per_day = max(1, -(-len(docs) // len(days)))
    out = []
    for n, doc in enumerate(docs):
        day, place = days[min(n // per_day, len(days) - 1)], n % per_day
        seconds = min(86_399, int((place + rng.random()) * 86_400 / per_day))
        moved = copy.deepcopy(doc)
        moved["killmail_time"] = f"{datetime.combine(day, time(), UTC) + timedelta(seconds=seconds):%Y-%m-%dT%H:%M:%SZ}"
        out.append(moved)
    return out
