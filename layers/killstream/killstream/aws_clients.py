"""How the poller calls AWS (SQS, SSM): botocore's own retries off and its timeouts short, so one
call can never outlive a known bound, CALL_SECONDS. The callers retry themselves, and start an
attempt only when that bound fits in the time left (docs/protocols.md, "AWS limits": every retry
loop checks the time left). botocore's defaults would allow 3 attempts of a 60 s read each."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

CONNECT_TIMEOUT = 1.0
READ_TIMEOUT = 3.0
CALL_SECONDS = CONNECT_TIMEOUT + READ_TIMEOUT
"""The longest one call can take: one attempt, its connect and read timeouts."""

CONFIG = Config(
    connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT, retries={"mode": "standard", "total_max_attempts": 1}
)


def client(service: Any) -> Any:
    """A boto3 client for `service` with these limits (the endpoint as boto3 finds it:
    AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_<SERVICE>, else AWS's own)."""
    return boto3.client(service, config=CONFIG)
