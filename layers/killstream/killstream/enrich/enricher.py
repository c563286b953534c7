"""The enricher's core: names from ESI for the ids of stored killmails (docs/protocols.md, "ESI").

A run walks the killmails stored since its watermark, a page at a time in (stored_at,
killmail_id) order, and for each page asks the names tables which of the page's ids ESI must
still be asked for: characters, corporations, alliances and factions go to POST /universe/names/
(≤ 1,000 a call); each new solar system and type is looked up once, with its constellation and
region, or its group and category, each of those once per new id too. What ESI says is written
as it comes; an id ESI cannot resolve is recorded with the reason and not asked again for a week.

The watermark moves only past killmails stored more than SETTLE ago: a transaction that stored
killmails a little earlier may commit after a later one did, and must not be passed over.
Killmails newer than that are enriched all the same (their ids are then known, so the next run's
anti-join finds nothing to ask). A run that ESI stops (down, limits, time) keeps what it got and
leaves the rest, watermark included, to the next run."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from killstream.config import EnricherConfig
from killstream.errors import DatabaseUnavailable, TransientError
from killstream.esi import universe
from killstream.esi.universe import Named, Node, Route, UniverseClient, Unresolvable
from killstream.observability import Metric, MetricUnit, logger, metrics
from killstream.storage.connection import Database
from killstream.storage.names import SYSTEMS, TYPES, Mark, NamesStore, Row, Tree

T = TypeVar("T")
RUN_BUDGET_SECONDS = 50.0  # scheduled every minute: a run ends before the next one starts
RESERVE_SECONDS = 3.0  # of the invocation's time, for the last writes and the report
PAGE_KILLMAILS = 2000
SETTLE = timedelta(minutes=5)  # far longer than any transaction that stores killmails (the fetcher's: < 30 s)
RETRY_UNRESOLVABLE = timedelta(days=7)
LOOKUP_PARALLELISM = 4
# Each chain: its table, and the route of each of its levels, leaf first.
CHAINS: tuple[tuple[Tree, tuple[Route, ...]], ...] = (
    (SYSTEMS, (universe.SYSTEMS, universe.CONSTELLATIONS, universe.REGIONS)),
    (TYPES, (universe.TYPES, universe.GROUPS, universe.CATEGORIES)),
)


@dataclass
class RunReport:
    """What a run did. `named` and `unresolvable` count entities, systems and types (a system or
    type is named once its whole chain is); `pending`: the ids still waiting for ESI in the
    killmails stored before the run began (counted over one page at most)."""

    killmails: int = 0
    named: int = 0
    unresolvable: int = 0
    pending: int = 0
    names_asked: int = 0  # ids sent to /universe/names/
    lookups: int = 0  # GET /universe/{kind}/{id}/ asked
    stopped_because: str | None = None  # None: every killmail up to the run's start was enriched
    problem: str | None = None
    watermark: Mark | None = None
    esi: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        summary = asdict(self)
        summary["watermark"] = (
            None if self.watermark is None else f"{self.watermark.stored_at.isoformat()}/{self.watermark.killmail_id}"
        )
        return summary


class Enricher:
    """`run(remaining)` → RunReport. Keeps its ESI client and database connection for the next run."""

    def __init__(
        self,
        *,
        esi: UniverseClient,
        database: Database,
        budget: float = RUN_BUDGET_SECONDS,
        page_size: int = PAGE_KILLMAILS,
        settle: timedelta = SETTLE,
        retry_after: timedelta = RETRY_UNRESOLVABLE,
        parallelism: int = LOOKUP_PARALLELISM,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.esi = esi
        self.database = database
        self.budget = budget
        self.page_size = page_size
        self.settle = settle
        self.retry_after = retry_after
        self.parallelism = parallelism
        self._clock = clock

    @classmethod
    def from_config(cls, config: EnricherConfig, **options: Any) -> Enricher:
        esi = UniverseClient(config.esi_url, config.user_agent, compatibility_date=config.esi_compatibility_date)
        return cls(esi=esi, database=Database(config.database), **options)

    def _store(self, method: Callable[..., T], *args: Any) -> T:
        """`method` of a NamesStore on the kept connection, with `args` (one transaction)."""
        return self.database.run(lambda conn: method(NamesStore(conn), *args))

    def run(
        self,
        remaining: Callable[[], float] = lambda: math.inf,
        stop_requested: Callable[[], bool] | None = None,
        *,
        from_start: bool = False,
    ) -> RunReport:
        """Enrich what was stored since the watermark (since the first killmail with
        `from_start`: the catch-up that re-checks every killmail). `remaining()`: the seconds the
        invocation has left, read at the start (ESI calls end by then, or by the budget) and
        before each page (so a shorter remaining time ends the run early). `stop_requested()`
        (the local runner's Ctrl+C/SIGTERM; Lambda has none) is read before each page too: a
        stop ends the run between pages, as the end of its time would."""
        deadline = self._clock() + max(0.0, min(remaining() - RESERVE_SECONDS, self.budget))
        stopped = stop_requested or (lambda: False)
        report = RunReport()

        def in_time() -> bool:
            return self._clock() < deadline and remaining() > RESERVE_SECONDS and not stopped()

        try:
            self._run(deadline, in_time, from_start, report)
        except DatabaseUnavailable as exc:
            logger.error(f"enrichment stopped: {exc}")
            raise
        report.esi = self.esi.take_counts()
        _publish(report)
        return report

    def _run(self, deadline: float, in_time: Callable[[], bool], from_start: bool, report: RunReport) -> None:
        started = self._store(NamesStore.now)
        horizon = started - self.settle
        mark = self._store(NamesStore.watermark)
        report.watermark = mark
        cursor = None if from_start else mark
        try:
            while True:
                if not in_time():
                    raise TransientError("out_of_time", "the run's time is up")
                page = self._store(NamesStore.page, cursor, started, self.page_size)
                if not page:
                    break
                self._enrich([m.killmail_id for m in page], deadline, report)
                report.killmails += len(page)
                settled = [m for m in page if m.stored_at <= horizon]
                if settled and (report.watermark is None or settled[-1] > report.watermark):
                    self._store(NamesStore.advance_watermark, settled[-1])
                    report.watermark = settled[-1]
                cursor = page[-1]
                if len(page) < self.page_size:
                    break
        except TransientError as exc:
            report.stopped_because, report.problem = exc.error_type, exc.message
            logger.warning(f"enrichment stopped early: {exc.message}", extra={"reason": exc.error_type})
        report.pending = self._pending(report.watermark, started)

    def _pending(self, mark: Mark | None, started: datetime) -> int:
        def count(store: NamesStore) -> int:
            page = [m.killmail_id for m in store.page(mark, started, self.page_size)]
            if not page:
                return 0
            leaves = sum(len(store.pending_leaves(tree, page, self.retry_after)) for tree, _ in CHAINS)
            return len(store.pending_entities(page, self.retry_after)) + leaves

        return self.database.run(lambda conn: count(NamesStore(conn)))

    # --- one page --------------------------------------------------------------------------

    def _enrich(self, page: Sequence[int], deadline: float, report: RunReport) -> None:
        entities = self._store(NamesStore.pending_entities, page, self.retry_after)
        if entities:
            self._names(entities, deadline, report)
        for tree, routes in CHAINS:
            pending = self._store(NamesStore.pending_leaves, tree, page, self.retry_after)
            if pending:
                self._chain(tree, routes, pending, deadline, report)

    def _names(self, ids: list[int], deadline: float, report: RunReport) -> None:
        answers: list[Named | Unresolvable] = []
        report.names_asked += len(ids)
        try:
            for answer in self.esi.names(ids, deadline):
                answers.append(answer)
        finally:  # what ESI said before it stopped is kept
            self._store(NamesStore.save_entities, [_entity_row(answer) for answer in answers])
            for answer in answers:
                if isinstance(answer, Named):
                    report.named += 1
                else:
                    report.unresolvable += 1
                    _log_unresolvable(answer)

    def _chain(
        self, tree: Tree, routes: tuple[Route, ...], pending: dict[int, Row | None], deadline: float, report: RunReport
    ) -> None:
        """Complete each pending leaf's row level by level: its own GET, then its parent's
        (known already from another row, or asked once for all the rows that need it)."""
        rows: dict[int, Row] = {leaf: row if row is not None else {tree.leaf: leaf} for leaf, row in pending.items()}
        stopped: TransientError | None = None
        for level, route in enumerate(routes):
            id_column, name_column = tree.levels[level]
            waiting = [row for row in rows.values() if row.get("error") is None and row.get(name_column) is None]
            ids = {row[id_column] for row in waiting}
            if not ids:
                continue
            answers: dict[int, Node | Unresolvable] = {}
            if level > 0:
                known = self._store(NamesStore.known, tree, level, ids)
                answers = {id_: Node(id_, name, parent) for id_, (name, parent) in known.items()}
            asked, stopped = self._lookups(route, sorted(ids - answers.keys()), deadline)
            report.lookups += len(asked)
            answers |= asked
            for row in waiting:
                answer = answers.get(row[id_column])
                if answer is not None:
                    _apply(tree, level, row, answer)
            if stopped is not None:
                break
        done = [row for row in rows.values() if row.get(tree.levels[0][1]) is not None or row.get("error")]
        self._store(NamesStore.save_rows, tree, done)
        root_name = tree.levels[-1][1]
        for row in done:
            if row.get("error"):
                report.unresolvable += 1
                _log_unresolvable(Unresolvable(row[tree.leaf], row["error"]))
            elif row.get(root_name) is not None:
                report.named += 1
        if stopped is not None:
            raise stopped

    def _lookups(
        self, route: Route, ids: list[int], deadline: float
    ) -> tuple[dict[int, Node | Unresolvable], TransientError | None]:
        """GET each id, a few at a time; after a transient failure no new one starts."""
        if not ids:
            return {}, None
        stop = threading.Event()

        def lookup(id_: int) -> Node | Unresolvable | TransientError | None:
            if stop.is_set():
                return None
            try:
                return self.esi.node(route, id_, deadline)
            except TransientError as exc:
                stop.set()
                return exc

        answers: dict[int, Node | Unresolvable] = {}
        stopped: TransientError | None = None
        with ThreadPoolExecutor(max_workers=min(self.parallelism, len(ids)), thread_name_prefix="esi") as pool:
            for id_, result in zip(ids, pool.map(lookup, ids), strict=True):
                if isinstance(result, TransientError):
                    stopped = stopped or result
                elif result is not None:
                    answers[id_] = result
        return answers, stopped


def _apply(tree: Tree, level: int, row: Row, answer: Node | Unresolvable) -> None:
    if isinstance(answer, Unresolvable):
        row["error"] = answer.reason
        return
    row[tree.levels[level][1]] = answer.name
    if level + 1 < len(tree.levels):
        row[tree.levels[level + 1][0]] = answer.parent_id
    if level == 0 and "security_status" in tree.extra:
        row["security_status"] = answer.security_status


def _entity_row(answer: Named | Unresolvable) -> tuple[int, str | None, str | None, str | None]:
    if isinstance(answer, Named):
        return (answer.id, answer.category, answer.name, None)
    return (answer.id, None, None, answer.reason)


def _log_unresolvable(answer: Unresolvable) -> None:
    logger.warning(f"unresolvable id {answer.id}: {answer.reason}", extra={"id": answer.id, "reason": answer.reason})


def _publish(report: RunReport) -> None:
    logger.info(
        "enrichment done",
        extra={key: value for key, value in report.as_dict().items() if key != "esi"} | report.esi,
    )
    for name, value in (
        (Metric.NAMES_RESOLVED, report.named),
        (Metric.NAMES_UNRESOLVABLE, report.unresolvable),
        (Metric.NAMES_PENDING, report.pending),
        (Metric.ESI_FETCHES, report.esi.get("requests", 0)),
        (Metric.ESI_ERRORS, report.esi.get("errors", 0)),
        (Metric.ESI_RATE_LIMITED, report.esi.get("rate_limited", 0)),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
