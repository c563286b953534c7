"""A local R2Z2, zKillboard's live feed of static files (docs/protocols.md, "R2Z2"), with what the
real publisher does that a reader must cope with: in-place updates announced by a later file's
`sequence_updated`, null placeholders, `"esi": null`, gaps, expiry, and stale 404s from a CDN edge."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from killstream_workstation.corpus import split_hash, zkb_for
from killstream_workstation.simulators.faults import FaultRates
from killstream_workstation.simulators.history import HistoryArchive
from killstream_workstation.simulators.http_server import Request, Response, SimulatorServer, json_response

PACKAGE_PATH = re.compile(r"/ephemeral/(\d+)\.json")
NOT_FOUND = Response(404, b"Not Found", {"Content-Type": "text/plain", "Cache-Control": "no-cache"})
PLACEHOLDER_HREF = "https://esi.evetech.net/killmails///"

PublishItem = dict | tuple[dict, str, dict]


class R2Z2Server(SimulatorServer):
    """Serves `/ephemeral/sequence.json` and `/ephemeral/{N}.json`; point R2Z2_URL at `url`. And
    zKillboard's history of everything it published under `/history/` (`history`, HISTORY_URL at
    `history_url`): days that ended `history_delay` ago, by `history_now`.

    `head` is the last sequence used; `advertised_sequence` is what sequence.json says, which is
    rewritten only once the head has moved more than `sequence_lag` past it, as the real
    publisher does (0: always the head)."""

    def __init__(
        self,
        *,
        sequence_lag: int = 51,
        first_sequence: int = 1,
        seed: int = 0,
        fault_rates: FaultRates | None = None,
        latency: float = 0.0,
        history_delay: timedelta = timedelta(hours=6),
        history_now: Callable[[], datetime] | None = None,
    ):
        super().__init__(seed=seed, fault_rates=fault_rates, latency=latency)
        self.history = HistoryArchive(delay=history_delay, now=history_now)
        self.sequence_lag = sequence_lag
        self.head = first_sequence - 1
        self.advertised_sequence = self.head
        self.published_count = 0
        self._packages: dict[int, bytes] = {}
        self._latest: dict[int, dict] = {}
        self._pointers: list[int] = []
        """Sequences rewritten in place whose pointer no new file carries yet (oldest first)."""
        self._uploaded_at = 0
        self._publisher: threading.Thread | None = None
        self._publisher_done = threading.Event()

    @property
    def url(self) -> str:
        return f"{self.base_url}/ephemeral"

    @property
    def history_url(self) -> str:
        return f"{self.base_url}/history"

    def publish(
        self,
        esi_doc: dict,
        killmail_hash: str,
        zkb: dict,
        *,
        include_esi: bool = True,
        esi_null: bool = False,
        raw: bool = True,
    ) -> int:
        """Publish one killmail under the next sequence number, which is returned. Without its
        esi, the file has no `esi` key, or `"esi": null` with `esi_null`. It goes into the
        history too, its body in the raw day file unless `raw` is false."""
        esi = {key: value for key, value in esi_doc.items() if key != "killmail_hash"}
        self.history.add(esi, killmail_hash, raw=raw)
        return self._append(esi["killmail_id"], killmail_hash, esi if include_esi else None, zkb, esi_null=esi_null)

    def update_in_place(self, sequence: int, new_zkb: dict) -> None:
        """zKillboard changed a killmail it published as `sequence`: the file is rewritten (same
        sequence_id, new zkb and uploaded_at), and the next new file points back at it."""
        with self._lock:
            package = json.loads(self._packages[sequence])
            package["zkb"] = new_zkb
            package["uploaded_at"] = self._next_uploaded_at()
            package.pop("sequence_updated", None)  # the pointer it carried was for that publication
            self._packages[sequence] = json.dumps(package).encode()
            if self._latest.get(package["killmail_id"], {}).get("sequence_id") == sequence:
                self._latest[package["killmail_id"]] = package
            self._pointers.append(sequence)

    @property
    def pending_pointers(self) -> int:
        """In-place updates no new file has pointed at yet."""
        with self._lock:
            return len(self._pointers)

    def publish_placeholder(self) -> int:
        """A null placeholder: a 200 with no killmail_id, no hash and an href of `/killmails///`."""
        with self._lock:
            self.head += 1
            zkb = {"locationID": None, "hash": None, "totalValue": 0, "points": 0, "href": PLACEHOLDER_HREF}
            package = {"esi": None, "zkb": zkb, "uploaded_at": self._next_uploaded_at(), "sequence_id": self.head}
            self._packages[self.head] = json.dumps(package).encode()
            self._advertise()
            return self.head

    def stale_404(self, sequence: int, *, times: int = 1) -> None:
        """The next `times` requests for `sequence` get a CDN edge's stale 404, though it exists."""
        path = f"/ephemeral/{sequence}.json"
        self.faults.script(status=404, body=b"Not Found", when=lambda requested: requested == path, times=times)

    def republish(self, killmail_id: int, new_zkb: dict) -> int:
        """The killmail published again as a new file, with new values. zKillboard updates in
        place (`update_in_place`); this is the other shape a reader must order right: two
        publications of one killmail under two sequence numbers."""
        with self._lock:
            earlier = self._latest[killmail_id]
            return self._append(killmail_id, earlier["hash"], earlier.get("esi"), new_zkb)

    def skip(self, count: int) -> None:
        """The publisher skips `count` sequence numbers: a gap that 404s for ever."""
        with self._lock:
            self.head += count
            self._advertise()

    def expire(self, up_to_sequence: int, *, from_sequence: int = 0) -> None:
        """Files up to and including `up_to_sequence` (from `from_sequence` on) have aged out (404)."""
        with self._lock:
            for sequence in [s for s in self._packages if from_sequence <= s <= up_to_sequence]:
                del self._packages[sequence]

    def start_publishing(self, items: Iterable[PublishItem], per_second: float | None) -> None:
        """Publish `items` from a background thread at a steady `per_second` (None: at once).
        An item is a corpus document (zkb made by `zkb_for`) or an (esi_doc, hash, zkb) tuple."""
        if self._publisher is not None and self._publisher.is_alive():
            raise RuntimeError("already publishing")
        self.published_count = 0
        self._publisher_done.clear()
        self._publisher = threading.Thread(
            target=self._publish_all, args=(list(items), per_second), name="r2z2-publisher", daemon=True
        )
        self._publisher.start()

    @property
    def done(self) -> bool:
        """The background publisher has published everything it was given."""
        return self._publisher_done.is_set()

    def wait_published(self, timeout: float | None = None) -> bool:
        return self._publisher_done.wait(timeout)

    def stop(self) -> None:
        super().stop()
        if self._publisher is not None:
            self._stopping.set()
            self._publisher.join()

    def respond(self, request: Request) -> Response:
        if not request.headers.get("User-Agent", "").strip():
            return Response(403, b"Forbidden: send a descriptive User-Agent", {"Content-Type": "text/plain"})
        if request.path.startswith("/history/"):
            return self.history.respond(request.path)
        if request.path == "/ephemeral/sequence.json":
            return json_response({"sequence": self.advertised_sequence}, headers={"Cache-Control": "no-cache"})
        match = PACKAGE_PATH.fullmatch(request.path)
        body = self._packages.get(int(match[1])) if match else None
        if body is None:
            return NOT_FOUND
        return Response(200, body, {"Content-Type": "application/json", "Cache-Control": "public, max-age=86400"})

    def _next_uploaded_at(self) -> int:
        # Unix seconds, as the real files say; strictly increasing here, so a rewrite made in the
        # same second as the first publication is still the newer one.
        self._uploaded_at = max(int(time.time()), self._uploaded_at + 1)
        return self._uploaded_at

    def _append(
        self,
        killmail_id: int,
        killmail_hash: str,
        esi: dict | None,
        zkb: dict,
        sequence_updated: int | None = None,
        *,
        esi_null: bool = False,
    ) -> int:
        with self._lock:
            self.head += 1
            package: dict = {"killmail_id": killmail_id, "hash": killmail_hash}
            if esi is not None or esi_null:
                package["esi"] = esi
            package |= {"zkb": zkb, "uploaded_at": self._next_uploaded_at(), "sequence_id": self.head}
            if sequence_updated is None and self._pointers:
                sequence_updated = self._pointers.pop(0)  # one pointer per new file
            if sequence_updated is not None:
                package["sequence_updated"] = sequence_updated
            self._packages[self.head] = json.dumps(package).encode()
            self._latest[killmail_id] = package
            self._advertise()
            return self.head

    def _advertise(self) -> None:
        if self.head - self.advertised_sequence > self.sequence_lag:
            self.advertised_sequence = self.head

    def _publish_all(self, items: list[PublishItem], per_second: float | None) -> None:
        started = time.monotonic()
        for index, item in enumerate(items):
            if per_second and not self.pause(started + index / per_second - time.monotonic()):
                break
            esi_doc, killmail_hash, zkb = item if isinstance(item, tuple) else (*split_hash(item), zkb_for(item))
            self.publish(esi_doc, killmail_hash, zkb)
            self.published_count += 1
        else:
            self._publisher_done.set()
