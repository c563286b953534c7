"""Reading a real SQS queue (moto over HTTP) in tests."""

from __future__ import annotations

import json

import boto3


def drain(queue_url: str) -> list[tuple[dict, dict]]:
    """Every message on the queue, taken off it, in the order SQS hands them out: (body, attributes)."""
    sqs = boto3.client("sqs")
    out: list[tuple[dict, dict]] = []
    while True:
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=0
        ).get("Messages", [])
        if not messages:
            return out
        for message in messages:
            attributes = {
                name: (value["DataType"], value["StringValue"])
                for name, value in message.get("MessageAttributes", {}).items()
            }
            out.append((json.loads(message["Body"]), attributes))
        # moto's receive slows down with every message left on the queue, deleted in batches it stays quick.
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(index), "ReceiptHandle": m["ReceiptHandle"]} for index, m in enumerate(messages)],
        )
