"""Local AWS for the integration tests: one moto server for the session, reached over HTTP the
way the code reaches AWS (boto3 honours AWS_ENDPOINT_URL), its state reset for every test."""

from __future__ import annotations

import logging
import uuid

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer

from killstream.sqs_limits import MAX_MESSAGE_BYTES


@pytest.fixture(scope="session")
def moto_server():
    # werkzeug would log every moto request to stderr.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto_server, monkeypatch):
    """AWS_ENDPOINT_URL and fake credentials for this test, on a reset moto."""
    requests.post(f"{moto_server}/moto-api/reset", timeout=5).raise_for_status()
    for name, value in {
        "AWS_ENDPOINT_URL": moto_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto_server


@pytest.fixture
def queue_url(aws) -> str:
    """A new, empty SQS queue on the local endpoint."""
    return boto3.client("sqs").create_queue(
        QueueName=f"killstream-packages-{uuid.uuid4().hex[:8]}",
        Attributes={"MaximumMessageSize": str(MAX_MESSAGE_BYTES)},  # as template.yaml sets it
    )["QueueUrl"]
