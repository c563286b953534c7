"""The live feeds behind one interface: `Source.poll() -> PollResult`, cursor in via `start()`."""

from .base import Gate, HttpClient, PollResult, Source, StopTick
from .r2z2 import R2Z2Source
from .redisq import RedisQSource

__all__ = ["Gate", "HttpClient", "PollResult", "R2Z2Source", "RedisQSource", "Source", "StopTick"]
