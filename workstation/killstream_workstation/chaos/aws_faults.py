"""Faults in the AWS calls the handlers make: SQS sends that fail or hang, and a poller killed
between its SQS send and its cursor save."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import boto3
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

from killstream import aws_clients
from killstream_workstation.chaos.report import ChaosRates
from killstream_workstation.local.lambda_runtime import InvocationKilled


class AwsFaults:
    """Faults in the AWS calls the handlers make, injected through botocore's event hooks on
    boto3's default session, so the handlers' own clients see them and no code is patched."""

    def __init__(self, queue_url: str, rates: ChaosRates, rng: random.Random, injected: Counter):
        self.queue_url = queue_url
        self.rates = rates
        self.rng = rng
        self.injected = injected
        self.active = True
        self.lock = threading.Lock()
        self._sends = 0

    def _roll(self, rate: float) -> bool:
        with self.lock:
            return self.active and self.rng.random() < rate

    def install(self) -> None:
        boto3.setup_default_session()
        session = boto3.DEFAULT_SESSION
        assert session is not None  # setup_default_session() just made it
        events = session.events
        events.register("before-parameter-build.sqs.SendMessageBatch", self._send_batch)
        events.register("before-parameter-build.ssm.PutParameter", self._put_cursor)

    def _send_batch(self, params, **_):
        if params.get("QueueUrl") != self.queue_url:
            return
        if self._roll(self.rates.sqs_send_failure):
            self.injected["sqs_send_failure"] += 1
            raise EndpointConnectionError(endpoint_url=self.queue_url)
        with self.lock:
            self._sends += 1
            # at least one hang a run, however the dice fall
            forced = self.active and self.rates.sqs_hang > 0 and self._sends == 3
        if forced or self._roll(self.rates.sqs_hang):
            # SQS accepted the connection and never answered: the call takes its whole bound.
            self.injected["sqs_hang"] += 1
            time.sleep(aws_clients.READ_TIMEOUT)
            raise ReadTimeoutError(endpoint_url=self.queue_url)

    def _put_cursor(self, params, **_):
        if self._roll(self.rates.poller_kill):
            self.injected["poller_killed"] += 1
            raise InvocationKilled("killed between the SQS send and the cursor save")
