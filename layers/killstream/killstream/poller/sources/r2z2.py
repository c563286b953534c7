"""R2Z2, zKillboard's live feed of static files (docs/protocols.md, "R2Z2"): walk the sequence
numbers from the cursor, one file per request; behind the head at the catch-up pacing, at the
head a 404 and the publisher's 6 s wait. A file that points at an older one rewritten in place
(`sequence_updated`) has that one fetched again; null placeholders are skipped; a number is
skipped as a gap only after repeated 404s spread over time, whichever request met them."""

from __future__ import annotations

import json
import math
from typing import Any, Self

from killstream.config import PollerConfig
from killstream.errors import InvalidPackage
from killstream.http.client import HttpClient
from killstream.http.gate import Gate
from killstream.observability import Metric, logger
from killstream.package import Package, from_r2z2, is_placeholder
from killstream.poller.counts import TickCounts
from killstream.poller.sources.base import PollResult, Source, source_client

NOT_PUBLISHED_WAIT = 6.0
"""After a 404 the next ask waits this long (the publisher sleeps 6 s when idle); it is also how
far apart two 404s must be before a file counts as missing."""
HEAD_REFRESH = 60.0
"""At the head, sequence.json is read again after a 404 at most this often: it is rewritten only
every 51 publications, so reading it on every idle 404 doubled the idle requests."""
UNREADABLE_ATTEMPTS = 3
LISTED_MISSING = 50


class _NoAnswer(Exception):
    """A request of this poll got no usable answer (already counted and backed off)."""


class R2Z2Source(Source):
    name = "r2z2"
    title = "R2Z2"
    flush_within = 1.0
    keeps_cursor = True

    def __init__(self, client: HttpClient, counts: TickCounts, base_url: str, *, catchup_pacing: float | None = None):
        super().__init__(client, counts)
        self.base_url = base_url.rstrip("/")
        self.catchup_pacing = catchup_pacing
        self.head: int | None = None
        self._next: int | None = None
        self._head_read = False
        self._head_read_at = -math.inf
        self._unreadable: dict[int, int] = {}
        self._gap_suspect: int | None = None
        """A sequence that 404'd although the feed had passed it: a gap only if it 404s again."""

    @classmethod
    def from_config(cls, config: PollerConfig, gate: Gate, counts: TickCounts) -> Self:
        return cls(
            source_client(gate, counts, config.user_agent),
            counts,
            config.r2z2_url,
            catchup_pacing=config.catchup_pacing_ms / 1000,
        )

    def start(self, cursor: int | None) -> None:
        self._next = None if cursor is None else cursor + 1
        # sequence.json is read once a tick (lag, and the start without a cursor), and at the head
        # at most once per HEAD_REFRESH.
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
        reply = self._get(self._url(sequence))
        if reply is None:
            return PollResult()
        if reply.status == 404:
            return self._not_found(sequence)
        if reply.status != 200:
            return self._unexpected(reply)
        self._seen(sequence)
        self._catch_up()
        doc = _document(reply.text)
        if is_placeholder(doc):
            self.counts.add(Metric.PLACEHOLDER_PACKAGES)
            logger.info("null placeholder: skipped", extra={"sequence_id": sequence})
            return self._passed(sequence)
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
            self._invalid(error, sequence_id=sequence)
            return self._passed(sequence)
        packages = [package]
        pointer = doc.get("sequence_updated") if isinstance(doc, dict) else None
        if type(pointer) is int and 0 <= pointer < sequence:
            try:
                updated = self._updated(pointer, sequence)
            except _NoAnswer:
                return PollResult()  # this file and its pointer are asked for again
            if updated is not None:
                packages.append(updated)
        return self._passed(sequence, packages)

    def _passed(self, sequence: int, packages: list[Package] | None = None) -> PollResult:
        self._next = sequence + 1
        self._unreadable.pop(sequence, None)
        return PollResult(packages or [], through=sequence)

    def _catch_up(self) -> None:
        # The file was there, so the next probably is: behind the head, R2Z2 allows far more than
        # the pacing RedisQ needs.
        if self.catchup_pacing is not None:
            self.gate.quicken(self.catchup_pacing)

    def _updated(self, pointer: int, sequence: int) -> Package | None:
        """The file `pointer` names, rewritten in place since it was published: fetched again so
        its newer values are stored. None when it is gone (expired) or unreadable."""
        reply = self._get(self._url(pointer))
        if reply is None:
            raise _NoAnswer
        where = {"sequence_updated": pointer, "sequence_id": sequence}
        if reply.status == 404:
            # Files live ~24 h: the update points at one that has aged out. Its killmail keeps the
            # values it was stored with (the reconciler's business), and the feed goes on.
            self.counts.add(Metric.UPDATE_POINTERS_EXPIRED)
            logger.info("update pointer to an expired file: its newer values cannot be read", extra=where)
            return None
        if reply.status != 200:
            self._unexpected(reply)
            raise _NoAnswer
        try:
            package = from_r2z2(reply.text)
        except InvalidPackage as error:
            self._invalid(error, **where)
            return None
        self.counts.add(Metric.UPDATE_POINTERS_FOLLOWED)
        self._catch_up()  # the file after the one that pointed here is still probably there
        logger.info(
            "update pointer followed: the rewritten file fetched again",
            extra={**where, "killmail_id": package.killmail_id},
        )
        return package

    def _url(self, sequence: int) -> str:
        return f"{self.base_url}/{sequence}.json"

    def _read_head(self) -> int | None:
        reply = self._get(f"{self.base_url}/sequence.json")
        self._head_read_at = self.gate.clock()
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

    def _published(self, sequence: int) -> bool:
        """Whether the feed is known to have passed `sequence` (sequence.json, or a later file);
        at the head, sequence.json is asked again when the last read is HEAD_REFRESH old."""
        if self.head is not None and self.head >= sequence:
            return True
        if self.gate.clock() - self._head_read_at >= HEAD_REFRESH:
            self._read_head()
        return self.head is not None and self.head >= sequence

    def _not_found(self, sequence: int) -> PollResult:
        # Held before anything else is asked, so whatever comes next (even no answer), the file
        # is not asked for again sooner than the publisher's own idle wait.
        self.gate.hold(NOT_PUBLISHED_WAIT)
        confirming = self._gap_suspect == sequence
        if not self._published(sequence):
            self.counts.add(Metric.EMPTY_POLLS)
            return PollResult()
        if not confirming:
            # The feed is past it, so it should be served; but a single 404 may be a CDN edge's
            # cached answer from before it was published. Skipping is for ever: only a second
            # 404, after the wait, makes it a gap.
            self.counts.add(Metric.EMPTY_POLLS)
            self._gap_suspect = sequence
            return PollResult()
        # Expired (older than ~24 h) or never published: it will 404 for ever.
        assert self.head is not None  # _published said the feed is past it
        first = self._first_present(sequence, self.head)
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
        """The first sequence after `missing` (confirmed missing) that is served (head + 1 if
        none up to head is); None when a probe got no usable answer. The search (_search) takes
        every 404 as absence; before anything is skipped, each number it would skip on one 404
        is asked once more, a wait later: a stale 404 found out that way ends the skip before it."""
        confirmed = {missing}
        while True:
            absent: set[int] = set()
            present = self._search(missing, head, absent, confirmed)
            if present is None:
                return None
            again = sorted(s for s in absent if missing < s < present)
            if not again:
                return present
            self.gate.hold(NOT_PUBLISHED_WAIT)
            for sequence in again:
                found = self._probe(sequence, set(), set())
                if found is None:
                    return None
                if found:  # a stale 404: it is served; what lies before it is searched again
                    head = sequence - 1
                    break
                confirmed.add(sequence)
            else:
                return present

    def _search(self, missing: int, head: int, absent: set[int], confirmed: set[int]) -> int | None:
        """The first sequence after `missing` that answers 200 (head + 1 if none up to head does).
        Gallops then bisects, so a cursor a day behind costs ~30 requests, not ~20,000. That
        assumes one run of missing numbers: between two nearby gaps it can step over a file that
        exists, so a short skip is then checked number by number."""
        if missing >= head:
            return head + 1
        known_missing, step, present = missing, 1, None
        while present is None:
            candidate = min(known_missing + step, head)
            found = self._probe(candidate, absent, confirmed)
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
            found = self._probe(middle, absent, confirmed)
            if found is None:
                return None
            known_missing, present = (known_missing, middle) if found else (middle, present)
        if present - missing - 1 <= LISTED_MISSING:
            for sequence in range(missing + 1, present):
                if sequence in absent or sequence in confirmed:
                    continue
                found = self._probe(sequence, absent, confirmed)
                if found is None:
                    return None
                if found:
                    return sequence
        return present

    def _probe(self, sequence: int, absent: set[int], confirmed: set[int]) -> bool | None:
        """Whether `sequence` is served (None: no usable answer). A 404 goes in `absent`; one
        already confirmed missing is not asked again."""
        if sequence in confirmed:
            return False
        reply = self._get(self._url(sequence))
        if reply is None:
            return None
        if reply.status == 404:
            absent.add(sequence)
        if reply.status in (200, 404):
            return reply.status == 200
        self._unexpected(reply)
        return None


def _document(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None
