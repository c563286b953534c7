"""A local AWS endpoint for the pipeline: moto's server with the killmail queue, its DLQ, the
cursor parameter and the killmail event bus, set up as template.yaml sets them up in AWS; and,
when asked, an alert rule as alerts/template.yaml sets one up: the webhook's secret, the rule on
the bus, the alert queue with its DLQ.

moto routes PutEvents to a rule's SQS target with its own re-implementation of EventBridge's
pattern matching (moto.events.models.EventPattern): what a local rule matches is moto's reading
of the pattern, and moto does not implement TestEventPattern (docs/protocols.md, "AWS limits")."""

from __future__ import annotations

import json
import logging
import os
import socket
import urllib.request
from dataclasses import dataclass
from typing import Any

import boto3

from killstream.sqs_limits import MAX_MESSAGE_BYTES

# As in template.yaml: SQS moves a message to the DLQ after this many receives.
MAX_RECEIVE_COUNT = 5
DLQ_RETENTION_SECONDS = 14 * 24 * 3600
MAX_MESSAGE_SIZE = MAX_MESSAGE_BYTES
REGION = "us-east-1"
# moto accepts any credentials; real ones must never leak to a local endpoint
LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}
REAL_CREDENTIALS = ("AWS_SESSION_TOKEN", "AWS_PROFILE")
"""Dropped wherever the local credentials are set."""
# As in alerts/template.yaml.
ALERT_MAX_RECEIVE_COUNT = 10
ALERT_DLQ_RETENTION_SECONDS = 14 * 24 * 3600


@dataclass(frozen=True)
class LocalAlert:
    """One alert rule's resources on the local endpoint."""

    rule_name: str
    secret_arn: str
    queue_url: str
    queue_arn: str
    dlq_url: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalAws:
    """Starts moto's ThreadedMotoServer and points boto3 at it through AWS_ENDPOINT_URL."""

    # Set by start().
    endpoint_url: str
    queue_url: str
    dlq_url: str
    event_bus_name: str

    def __init__(self, *, visibility_timeout: int, prefix: str = "killstream-local"):
        self.visibility_timeout = visibility_timeout
        self.prefix = prefix
        self.server: Any = None
        self.cursor_parameter = f"/{prefix}/r2z2-cursor"

    def start(self) -> LocalAws:
        from moto.server import ThreadedMotoServer

        # no access log line per AWS call, nor the tracebacks of moto's own races under concurrent
        # receives (it answers 500 and the SDK retries)
        logging.getLogger("werkzeug").setLevel(logging.CRITICAL)
        port = _free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.server.start()
        self.endpoint_url = f"http://127.0.0.1:{port}"
        # moto keeps its state per process, not per server: start from nothing
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST"), timeout=10)
        os.environ.update({"AWS_ENDPOINT_URL": self.endpoint_url, **LOCAL_CREDENTIALS})
        for name in REAL_CREDENTIALS:
            os.environ.pop(name, None)
        sqs = self.client("sqs")
        self.dlq_url = sqs.create_queue(
            QueueName=f"{self.prefix}-dlq",
            Attributes={
                "MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS),
                "MaximumMessageSize": str(MAX_MESSAGE_SIZE),
            },
        )["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=self.dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.queue_url = sqs.create_queue(
            QueueName=f"{self.prefix}-killmails",
            Attributes={
                "VisibilityTimeout": str(self.visibility_timeout),
                "MaximumMessageSize": str(MAX_MESSAGE_SIZE),
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT}),
            },
        )["QueueUrl"]
        self.event_bus_name = f"{self.prefix}-killmails"
        self.client("events").create_event_bus(Name=self.event_bus_name)
        return self

    def create_alert(
        self, *, pattern: str, webhook_url: str, visibility_timeout: int, name: str = "alert"
    ) -> LocalAlert:
        """An alert rule as alerts/template.yaml makes one: the webhook URL in a secret, the rule
        with `pattern` on the bus, its target the alert queue, whose DLQ takes what fails
        ALERT_MAX_RECEIVE_COUNT times."""
        sqs = self.client("sqs")
        dlq_url = sqs.create_queue(
            QueueName=f"{self.prefix}-{name}-dlq",
            Attributes={"MessageRetentionPeriod": str(ALERT_DLQ_RETENTION_SECONDS)},
        )["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queue_url = sqs.create_queue(
            QueueName=f"{self.prefix}-{name}s",
            Attributes={
                "VisibilityTimeout": str(visibility_timeout),
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": ALERT_MAX_RECEIVE_COUNT}
                ),
            },
        )["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        secret_arn = self.client("secretsmanager").create_secret(
            Name=f"{self.prefix}-{name}-webhook", SecretString=webhook_url
        )["ARN"]
        events = self.client("events")
        rule_name = f"{self.prefix}-{name}"
        events.put_rule(Name=rule_name, EventBusName=self.event_bus_name, EventPattern=pattern, State="ENABLED")
        events.put_targets(
            Rule=rule_name, EventBusName=self.event_bus_name, Targets=[{"Id": "alert-queue", "Arn": queue_arn}]
        )
        return LocalAlert(rule_name, secret_arn, queue_url, queue_arn, dlq_url)

    def client(self, service: Any) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint_url, region_name=REGION)

    def set_cursor(self, value: str) -> None:
        self.client("ssm").put_parameter(Name=self.cursor_parameter, Value=value, Type="String", Overwrite=True)

    def queue_depth(self, queue_url: str) -> int:
        attrs = self.client("sqs").get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )
        return sum(int(v) for v in attrs["Attributes"].values())

    def stop(self) -> None:
        if self.server:
            self.server.stop()
            self.server = None
