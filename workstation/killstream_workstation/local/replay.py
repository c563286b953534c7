"""An offline feed for the local pipeline: a local R2Z2 and ESI serving killmails at a steady
rate — a folder of ESI killmail files, or, when no folder is given, a corpus generated here, so a
fresh clone replays with no network and no other checkout."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

from killstream_workstation import corpus
from killstream_workstation.simulators.esi import EsiServer
from killstream_workstation.simulators.r2z2 import R2Z2Server

BUILT_IN_COUNT = 106
"""How many killmails the built-in corpus holds (as many as the sample of real ones)."""


class Replay:
    """A local R2Z2 and ESI serving a folder of killmails: a steady publication rate, a mix of
    packages with the ESI killmail inline and metadata-only ones the fetcher gets from ESI."""

    def __init__(
        self, docs: list[dict], *, rate: float, inline_ratio: float, esi_latency: float, seed: int, published: int = 0
    ):
        self.docs = docs
        self.resume_at = min(published, len(docs))
        """Documents a stopped run had published: published again at once, under the same sequences."""
        self.published = 0
        self.rate = rate
        self.inline_ratio = inline_ratio
        self.rng = random.Random(seed)
        self.r2z2 = R2Z2Server(sequence_lag=0)
        self.esi = EsiServer(latency=esi_latency)
        self.published_at: dict[int, float] = {}  # killmail_id -> wall-clock time of publication
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._publish, name="replay-publisher", daemon=True)

    def start(self) -> Replay:
        self.r2z2.start()
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
            self.r2z2.publish(esi, killmail_hash, corpus.zkb_for(doc), include_esi=inline)
            self.published = n + 1
        self.done.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.r2z2.stop()
        self.esi.stop()


def replay_documents(path: str | os.PathLike | None) -> list[dict]:
    """The killmails of a folder (`*.json` ESI documents with their `killmail_hash`), or the
    built-in generated corpus when `path` is None."""
    if path is None:
        return corpus.generate(BUILT_IN_COUNT)
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"--replay: no such folder: {folder}")
    docs = corpus.load_dir(folder)
    if not docs:
        raise FileNotFoundError(f"--replay: no *.json killmails in {folder}")
    return docs
