"""The R2Z2 cursor, durable in an SSM parameter: the last sequence whose package SQS accepted
(and every one before it). It only moves forward, and is written at most once per
`min_interval` seconds during a tick plus once at its end. Each call is made only when one
call's longest fits in `time_left()` (the tick sets it)."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from killstream import aws_clients
from killstream.errors import CursorUnavailable
from killstream.observability import logger

MIN_INTERVAL = 1.0
LOAD_ATTEMPTS = 3
LOAD_BACKOFF = 0.2


class CursorStore:
    def __init__(
        self,
        client: Any,
        parameter: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        min_interval: float = MIN_INTERVAL,
        call_seconds: float = aws_clients.CALL_SECONDS,
    ):
        self.client = client
        self.parameter = parameter
        self.clock = clock
        self.sleep = sleep
        self.min_interval = min_interval
        self.call_seconds = call_seconds
        self.time_left: Callable[[], float] = lambda: math.inf
        self.saved: int | None = None
        self._saved_at = -math.inf

    def load(self) -> int | None:
        """The cursor, or None when there is none yet: no parameter, or a value that is not a
        sequence number (the template creates it as "none"). A failed read is tried again while
        there is time; CursorUnavailable when it never succeeds."""
        value = None
        for attempt in range(LOAD_ATTEMPTS):
            if self.time_left() < self.call_seconds + (LOAD_BACKOFF if attempt else 0.0):
                raise CursorUnavailable(f"{self.parameter}: no time left to read it")
            if attempt:
                self.sleep(LOAD_BACKOFF)
            try:
                value = self.client.get_parameter(Name=self.parameter)["Parameter"]["Value"]
                break
            except self.client.exceptions.ParameterNotFound:
                value = None
                break
            except (BotoCoreError, ClientError) as error:
                logger.warning(
                    "cursor not read", extra={"parameter": self.parameter, "attempt": attempt + 1, "error": str(error)}
                )
        else:
            raise CursorUnavailable(f"{self.parameter}: not read after {LOAD_ATTEMPTS} attempts")
        cursor = int(value) if value is not None and re.fullmatch(r"[0-9]+", value) else None
        if cursor is None:
            logger.info("no cursor yet", extra={"parameter": self.parameter, "value": value})
        self.saved = cursor
        return cursor

    def save(self, cursor: int | None, *, final: bool = False) -> bool:
        """Write `cursor` if it is ahead of the saved one and (unless `final`) the last write is
        at least `min_interval` old. A failed write is logged: the next one carries the cursor,
        and a cursor left behind only means packages are sent again."""
        if cursor is None or (self.saved is not None and cursor <= self.saved):
            return False
        if not final and self.clock() - self._saved_at < self.min_interval:
            return False
        if self.time_left() < self.call_seconds:
            (logger.error if final else logger.warning)(
                "cursor not saved: no time left for the call", extra={"parameter": self.parameter, "cursor": cursor}
            )
            return False
        try:
            self.client.put_parameter(Name=self.parameter, Value=str(cursor), Type="String", Overwrite=True)
        except (BotoCoreError, ClientError) as error:
            (logger.error if final else logger.warning)(
                "cursor not saved", extra={"parameter": self.parameter, "cursor": cursor, "error": str(error)}
            )
            return False
        self.saved = cursor
        self._saved_at = self.clock()
        return True
