"""What a local run keeps under the local folder (.local/, KILLSTREAM_LOCAL_DIR) so the next one
resumes where it stopped: the cursor it had reached, how far its replay had published, and every
message its queue and DLQ still held (the local SQS lives in memory and dies with the run). And,
while a `killstream run` is up, where its stack is, so `killstream reconcile` can use it."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = "run-state.json"
STACK_FILE = "stack.json"
LOCAL_DIR_ENV = "KILLSTREAM_LOCAL_DIR"


def local_dir() -> Path:
    """The folder the local tools keep their state in: $KILLSTREAM_LOCAL_DIR, else .local."""
    return Path(os.environ.get(LOCAL_DIR_ENV, "").strip() or ".local")


@dataclass
class SavedRun:
    """A stopped run, as the next one of the same feed takes it up."""

    feed: str
    """Which feed the cursor belongs to (a replay, of which documents, or a live URL), and the
    database it went into."""
    cursor: str
    published: int = 0
    """A replay's documents published so far (the next run publishes them again at once)."""
    queue: list[dict[str, Any]] = field(default_factory=list)
    dlq: list[dict[str, Any]] = field(default_factory=list)
    """Messages as {"body": ..., "attributes": {name: {"DataType": ..., "StringValue": ...}}}."""
    handled: list[int] = field(default_factory=list)
    """A replay's killmails handled so far (stored, skipped, updated or dead-lettered) by the runs
    of this feed: a resumed replay is complete once the rest are."""


class RunState:
    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def path(self) -> Path:
        return self.root / STATE_FILE

    def load(self, feed: str) -> SavedRun | None:
        """The last run of this feed, or None (none yet, or the last run was of another feed)."""
        try:
            saved = SavedRun(**json.loads(self.path.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        return saved if saved.feed == feed else None

    def save(self, saved: SavedRun) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(saved)))
        temporary.replace(self.path)  # a run killed while saving leaves the last state whole

    def publish_stack(self, stack: dict[str, str]) -> None:
        """Where the running stack is (endpoints, queue, database), for other commands."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / STACK_FILE
        path.write_text(json.dumps({"pid": os.getpid(), **stack}))
        path.chmod(0o600)  # it names the database URL

    def withdraw_stack(self) -> None:
        (self.root / STACK_FILE).unlink(missing_ok=True)

    def running_stack(self) -> dict[str, str] | None:
        """The stack of a `killstream run` that is up, or None."""
        try:
            stack = json.loads((self.root / STACK_FILE).read_text())
            os.kill(int(stack.pop("pid")), 0)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return stack
