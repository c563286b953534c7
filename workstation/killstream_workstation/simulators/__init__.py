"""Local servers that speak R2Z2, RedisQ and ESI as docs/streams.md describes them, with fault
injection: for the tests, the chaos suite and `killstream run --replay`."""

from .esi import EsiServer
from .faults import Fault, FaultInjector, FaultRates, InjectedFault, Request, Response
from .r2z2 import R2Z2Server
from .redisq import FilterError, PackageFilter, RedisQServer

__all__ = [
    "EsiServer",
    "Fault",
    "FaultInjector",
    "FaultRates",
    "FilterError",
    "InjectedFault",
    "PackageFilter",
    "R2Z2Server",
    "RedisQServer",
    "Request",
    "Response",
]
