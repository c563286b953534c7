"""One `killstream run` per local directory: two at once would share the embedded database and,
live, double the requests to zKillboard. The lock is an flock on `<local dir>/run.lock`, so it
goes with the process however that ends (Ctrl+C, kill -9): there is nothing stale to clean up."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from killstream_workstation.problems import Problem

LOCK_NAME = "run.lock"


class RunLocked(Problem):
    """Another run holds the local directory."""


class RunLock:
    def __init__(self, directory: Path):
        self.directory = directory
        self.path = directory / LOCK_NAME
        self._file: IO[str] | None = None

    def acquire(self) -> RunLock:
        self.directory.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # held open for as long as the lock
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            pid = f" (pid {holder})" if holder.isdigit() else ""
            raise RunLocked(
                f"another killstream run is using {self.directory}{pid}: stop it first (Ctrl+C where it runs), "
                f"or give this one a folder of its own: KILLSTREAM_LOCAL_DIR=.local-2 make run …"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
