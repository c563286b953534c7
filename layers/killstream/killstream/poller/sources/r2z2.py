"""R2Z2, zKillboard's live feed of static files (docs/protocols.md, "R2Z2"): walk the sequence
numbers from the cursor, one file per request."""

from __future__ import annotations

import json
from typing import Self

from killstream.config import PollerConfig
from killstream.errors import InvalidPackage
from killstream.http.client import HttpClient
from killstream.http.gate import Gate
from killstream.observability import Metric, logger
from killstream.package import from_r2z2
from killstream.poller.counts import TickCounts
from killstream.poller.sources.base import PollResult, Source, source_client

NOT_PUBLISHED_WAIT = 6.0
UNREADABLE_ATTEMPTS = 3
LISTED_MISSING = 50


class R2Z2Source(Source):
    name = "r2z2"
    title = "R2Z2"
    flush_within = 1.0
    keeps_cursor = True

    def __init__(self, client: HttpClient, counts: TickCounts, base_url: str):
        super().__init__(client, counts)
        self.base_url = base_url.rstrip("/")
        self.head: int | None = None
        self._next: int | None = None
        self._head_read = False
        self._unreadable: dict[int, int] = {}
        self._gap_suspect: int | None = None
        """A sequence that 404'd although sequence.json had passed it: a gap only if it 404s again."""

    @classmethod
    def from_config(cls, config: PollerConfig, gate: Gate, counts: TickCounts) -> Self:
        return cls(source_client(gate, counts, config.user_agent), counts, config.r2z2_url)

    def start(self, cursor: int | None) -> None:
        self._next = None if cursor is None else cursor + 1
        # sequence.json is read once a tick (lag, and the start without a cursor) and again on 404.
        self._head_read = False

    def lag(self, cursor: int | None) -> int | None:
        if self.head is None or cursor is None:
            return None
        return max(0, self.head - cursor)

    def poll(self) -> PollResult:
        if not self._head_read or self._next is None:
            self._head_read = True
            head = self._read_head()
            if self._next is None and head is not None:
                self._next = head
                logger.info("no cursor: starting at the head of the feed", extra={"sequence_id": head})
            return PollResult()
        sequence = self._next
        reply = self._get(f"{self.base_url}/{sequence}.json")
        if reply is None:
            return PollResult()
        if reply.status == 404:
            return self._not_found(sequence)
        if reply.status != 200:
            return self._unexpected(reply)
        self._seen(sequence)
        try:
            package = from_r2z2(reply.text)
        except InvalidPackage as error:
            # A static file that does not parse is most often a cut transfer or an error page
            # served with 200: ask again. Only one that stays unreadable is skipped.
            self._unreadable[sequence] = attempts = self._unreadable.get(sequence, 0) + 1
            if attempts < UNREADABLE_ATTEMPTS:
                logger.warning(
                    "unreadable package: asking again",
                    extra={"sequence_id": sequence, "attempt": attempts, "problem": error.reason},
                )
                return PollResult()
            self._next = sequence + 1
            self._unreadable.clear()
            self._invalid(error, sequence_id=sequence)
            return PollResult(through=sequence)
        self._next = sequence + 1
        self._unreadable.pop(sequence, None)
        return PollResult([package], through=sequence)

    def _read_head(self) -> int | None:
        reply = self._get(f"{self.base_url}/sequence.json")
        if reply is None:
            return None
        if reply.status != 200:
            self._unexpected(reply)
            return None
        try:
            head = json.loads(reply.text)["sequence"]
        except (ValueError, TypeError, KeyError):
            head = None
        if type(head) is not int or head < 0:
            self._unexpected(reply)
            return None
        self._seen(head)
        return head

    def _seen(self, sequence: int) -> None:
        # sequence.json lags the real head by up to ~51; a file we fetched proves a later one.
        self.head = sequence if self.head is None else max(self.head, sequence)

    def _not_found(self, sequence: int) -> PollResult:
        # Held before sequence.json is read, so whatever that read brings (even no answer), the
        # file is not asked for again sooner than the publisher's own idle wait.
        self.gate.hold(NOT_PUBLISHED_WAIT)
        confirming = self._gap_suspect == sequence
        if not confirming:
            self.counts.add(Metric.EMPTY_POLLS)
        head = self._read_head()
        published = head is not None and head >= sequence
        if not confirming:
            if published:
                # sequence.json is rewritten only after the files it covers exist, so this one
                # should be served; but a single 404 may be a CDN edge's cached answer from before
                # it was published. Skipping is for ever: only a second 404, after the wait,
                # makes it a gap.
                self._gap_suspect = sequence
            return PollResult()
        if head is None or head < sequence:  # not published
            self.counts.add(Metric.EMPTY_POLLS)
            return PollResult()
        # Expired (older than ~24 h) or never published: it will 404 for ever.
        first = self._first_present(sequence, head)
        if first is None:
            return PollResult()
        self._gap_suspect = None
        missing = list(range(sequence, first))
        self.counts.add(Metric.SEQUENCE_GAPS, len(missing))
        logger.warning(
            f"sequence gap: skipping {missing[0]}-{missing[-1]} ({len(missing)}), never to be served; "
            "the reconciler recovers their killmails from zKillboard's history",
            extra={
                "sequences": f"{missing[0]}-{missing[-1]}",
                "first_missing": missing[0],
                "last_missing": missing[-1],
                "count": len(missing),
                "missing": missing if len(missing) <= LISTED_MISSING else None,
            },
        )
        self._next = first
        return PollResult(through=first - 1)

    def _first_present(self, missing: int, head: int) -> int | None:
        """The first sequence after `missing` that is served (head + 1 if none up to head is);
        None when a probe got no usable answer. Gallops then bisects, so a cursor a day behind
        costs ~30 requests, not ~20,000. That search assumes one run of missing numbers: between
        two nearby gaps it can step over a file that exists, so a short skip is then checked
        number by number, and only what is truly missing is skipped."""
        if missing >= head:
            return head + 1
        absent = {missing}
        known_missing, step, present = missing, 1, None
        while present is None:
            candidate = min(known_missing + step, head)
            found = self._probe(candidate, absent)
            if found is None:
                return None
            if found:
                present = candidate
            elif candidate == head:
                present = head + 1
            else:
                known_missing, step = candidate, step * 2
        while present - known_missing > 1:
            middle = (known_missing + present) // 2
            found = self._probe(middle, absent)
            if found is None:
                return None
            known_missing, present = (known_missing, middle) if found else (middle, present)
        if present - missing - 1 <= LISTED_MISSING:
            for sequence in range(missing + 1, present):
                if sequence in absent:
                    continue
                found = self._probe(sequence, absent)
                if found is None:
                    return None
                if found:
                    return sequence
        return present

    def _probe(self, sequence: int, absent: set[int]) -> bool | None:
        reply = self._get(f"{self.base_url}/{sequence}.json")
        if reply is None:
            return None
        if reply.status == 404:
            absent.add(sequence)
        if reply.status in (200, 404):
            return reply.status == 200
        self._unexpected(reply)
        return None
