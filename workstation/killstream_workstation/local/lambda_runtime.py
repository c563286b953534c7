"""Just enough of the Lambda runtime to call the real handlers on one machine: load a handler
module from its file, a context object that carries the time budget, the SQS event Lambda's
event source builds, and the death of an instance mid-invocation."""

from __future__ import annotations

import importlib.util
import time
import uuid
from types import ModuleType
from typing import Protocol

from killstream_workstation.corpus import repo_root
from killstream_workstation.local.aws import REGION


def load_handler_module(function: str) -> ModuleType:
    """`functions/<function>/app.py` as module `<function>_app` (both files are named app.py)."""
    path = repo_root() / "functions" / function / "app.py"
    spec = importlib.util.spec_from_file_location(f"{function}_app", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"no handler module at {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class LambdaContext:
    """What handlers and Powertools read from Lambda's context object."""

    def __init__(self, function_name: str, timeout_seconds: float, memory_mb: int = 256, clock=time.monotonic):
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:000000000000:function:{function_name}"
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._clock = clock
        self._deadline = clock() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - self._clock()) * 1000))


class InvocationKilled(BaseException):
    """The function's process died mid-invocation (timeout, out of memory, a crash): nothing after
    that point ran, and the next invocation gets a fresh instance. Fault-injection raises it."""


class Stop(Protocol):
    def is_set(self) -> bool: ...


class StoppableContext(LambdaContext):
    """A Lambda context that also says when a stop was asked for (any of `stops` set: Ctrl+C,
    SIGTERM, a paused poller): stopping is not dying. The poller then ends its budget (no new
    work) and finishes what it began — a package RedisQ already popped is read and sent — then
    flushes and saves the cursor, all within the remaining time, which stays what it is. The
    enricher and the reconciler end their runs on it too."""

    def __init__(self, function_name: str, timeout_seconds: float, *stops: Stop, **options):
        super().__init__(function_name, timeout_seconds, **options)
        self._stops = stops

    def stop_requested(self) -> bool:
        return any(stop.is_set() for stop in self._stops)


LOCAL_QUEUE_ARN = f"arn:aws:sqs:{REGION}:000000000000:killstream-local-killmails"


def sqs_record(body: str, message_id: str, *, queue_arn: str = LOCAL_QUEUE_ARN) -> dict:
    """One record of Lambda's SQS event: a message sent just now, received for the first time."""
    return {
        "messageId": message_id,
        "receiptHandle": "handle",
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": str(int(time.time() * 1000))},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }


def sqs_event(messages: list[dict], queue_arn: str) -> dict:
    """The event Lambda's SQS event source builds from received messages."""
    records = []
    for m in messages:
        attributes = {
            name: {
                "stringValue": a.get("StringValue"),
                "binaryValue": a.get("BinaryValue"),
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": a["DataType"],
            }
            for name, a in (m.get("MessageAttributes") or {}).items()
        }
        records.append(
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": attributes,
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
        )
    return {"Records": records}
