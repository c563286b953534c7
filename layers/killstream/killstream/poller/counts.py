"""What a poller tick counts, named as the metrics the counts become. One object per poller,
shared by the tick, its source and its HTTP client, so a count made just before a StopTick cuts
a poll short is still in the tick's summary."""

from __future__ import annotations

from collections import Counter


class TickCounts:
    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def add(self, metric: str, value: int = 1) -> None:
        self._counts[metric] += value

    def __getitem__(self, metric: str) -> int:
        return self._counts[metric]

    def reset(self) -> None:
        """A tick begins: nothing counted yet."""
        self._counts.clear()
