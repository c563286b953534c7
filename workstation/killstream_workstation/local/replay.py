"""An offline feed for the local pipeline: a local R2Z2 (or RedisQ) and ESI serving killmails at
a steady rate — a folder of ESI killmail files, or, when no folder is given, a corpus generated
here, so a fresh clone replays with no network and no other checkout.

A folder is read file by file: a file that cannot be replayed (not JSON, not an object, no
`killmail_id` or `killmail_hash`) is named and left out, and the rest is replayed."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from killstream_workstation import corpus
from killstream_workstation.problems import UsageProblem
from killstream_workstation.simulators.esi import EsiServer
from killstream_workstation.simulators.r2z2 import R2Z2Server
from killstream_workstation.simulators.redisq import RedisQServer

BUILT_IN_COUNT = 106
"""How many killmails the built-in corpus holds (as many as the sample of real ones)."""
LOCAL_QUEUE_ID = "killstream-local"
"""The RedisQ queueID a replay listens with unless told another: the local RedisQ takes any."""
FOLDER_HINT = (
    "give a folder of ESI killmail files (*.json with their killmail_hash), "
    f"or --replay alone for the built-in {BUILT_IN_COUNT}"
)


class ReplayFolderError(UsageProblem):
    """The folder given to --replay cannot be replayed at all."""


@dataclass(frozen=True)
class RejectedFile:
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path.name}: {self.reason}"


@dataclass
class ReplaySet:
    """What a replay serves, and the files of its folder it had to leave out."""

    docs: list[dict]
    rejected: list[RejectedFile] = field(default_factory=list)

    @property
    def distinct(self) -> int:
        """How many different killmails it holds (a folder may hold one twice)."""
        return len({doc["killmail_id"] for doc in self.docs})


def replay_documents(path: str | os.PathLike | None) -> ReplaySet:
    """The killmails of a folder (`*.json` ESI documents with their `killmail_hash`), or the
    built-in generated corpus when `path` is None. Raises ReplayFolderError when nothing in the
    folder can be replayed; files that cannot be are listed in `rejected`."""
    if path is None:
        return ReplaySet(corpus.generate(BUILT_IN_COUNT))
    folder = Path(path)
    if not folder.exists():
        raise ReplayFolderError(f"--replay: no such folder: {folder} ({FOLDER_HINT})")
    if not folder.is_dir():
        raise ReplayFolderError(f"--replay: {folder} is a file, not a folder ({FOLDER_HINT})")
    files = sorted(folder.glob("*.json"))
    if not files:
        raise ReplayFolderError(f"--replay: no *.json files in {folder} ({FOLDER_HINT})")
    docs, rejected = [], []
    for file in files:
        doc, reason = _read(file)
        if reason is None:
            docs.append(doc)
        else:
            rejected.append(RejectedFile(file, reason))
    if not docs:
        shown = "; ".join(str(r) for r in rejected[:3]) + ("; …" if len(rejected) > 3 else "")
        raise ReplayFolderError(f"--replay: none of the {len(files)} *.json files in {folder} is a killmail ({shown})")
    return ReplaySet(sorted(docs, key=lambda d: d["killmail_id"]), rejected)


def _read(file: Path) -> tuple[dict, str | None]:
    """The document, or why the file cannot be replayed."""
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        return {}, "not UTF-8 text"
    except OSError as error:
        return {}, f"cannot be read ({error.strerror or error})"
    except ValueError as error:
        return {}, f"not valid JSON ({error})"
    if not isinstance(doc, dict):
        return {}, f"not a killmail: the JSON is a {type(doc).__name__}, not an object"
    killmail_id = doc.get("killmail_id")
    if "killmail_id" not in doc:
        return {}, "no killmail_id"
    if not isinstance(killmail_id, int) or isinstance(killmail_id, bool) or killmail_id <= 0:
        return {}, f"killmail_id is not a positive whole number: {killmail_id!r}"
    killmail_hash = doc.get("killmail_hash")
    if not isinstance(killmail_hash, str) or not killmail_hash.strip():
        return {}, "no killmail_hash (ESI files lack it: add the hash zKillboard lists for the killmail)"
    return doc, None


class Replay:
    """A local feed (R2Z2, or RedisQ with `source="redisq"`) and ESI serving a set of killmails:
    a steady publication rate, a mix of packages with the ESI killmail inline and metadata-only
    ones the fetcher gets from ESI."""

    def __init__(
        self,
        docs: list[dict],
        *,
        rate: float,
        inline_ratio: float,
        esi_latency: float,
        seed: int,
        source: str = "r2z2",
        published: int = 0,
    ):
        self.docs = docs
        self.resume_at = min(published, len(docs))
        """Documents a stopped run had published: published again at once, under the same sequences."""
        self.published = 0
        self.rate = rate
        self.inline_ratio = inline_ratio
        self.source = source
        self.rng = random.Random(seed)
        self.feed: R2Z2Server | RedisQServer = RedisQServer() if source == "redisq" else R2Z2Server(sequence_lag=0)
        self.esi = EsiServer(latency=esi_latency)
        self.published_at: dict[int, float] = {}  # killmail_id -> wall-clock time of publication
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._publish, name="replay-publisher", daemon=True)

    @property
    def r2z2(self) -> R2Z2Server:
        """The local R2Z2 (a replay of the r2z2 source)."""
        if not isinstance(self.feed, R2Z2Server):
            raise TypeError(f"this replay serves {self.source}, not r2z2")
        return self.feed

    @property
    def url(self) -> str:
        """Where the local feed listens."""
        return self.feed.url

    def environment(self) -> dict[str, str]:
        """The poller's, fetcher's and enricher's variables that point them at this replay, and,
        for an R2Z2 replay, the reconciler's: the local R2Z2 serves zKillboard's history too."""
        if isinstance(self.feed, RedisQServer):
            feed = {"REDISQ_URL": self.feed.url}
        else:
            feed = {"R2Z2_URL": self.feed.url, "HISTORY_URL": self.feed.history_url}
        return {**feed, "ESI_URL": self.esi.url}

    def start(self) -> Replay:
        self.feed.start()
        self.esi.start()
        self.esi.add_many(self.docs)
        self._thread.start()
        return self

    def _publish(self) -> None:
        interval = 1.0 / self.rate if self.rate > 0 else 0.0
        next_at = time.monotonic()
        for n, doc in enumerate(self.docs):
            if n >= self.resume_at:
                if self._stop.wait(max(0.0, next_at - time.monotonic())):
                    return
                next_at += interval
            esi, killmail_hash = corpus.split_hash(doc)
            self.published_at[doc["killmail_id"]] = time.time()
            # the same draw for each document whether published now or again on resuming
            inline = self.rng.random() < self.inline_ratio
            if isinstance(self.feed, RedisQServer):
                self.feed.publish(esi, killmail_hash, corpus.zkb_for(doc), include_killmail=inline)
            else:
                self.feed.publish(esi, killmail_hash, corpus.zkb_for(doc), include_esi=inline)
            self.published = n + 1
        self.done.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.feed.stop()
        self.esi.stop()
