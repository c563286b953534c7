"""The fakes tests share: one clock, one recording SQS client, one SSM client."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from botocore.exceptions import EndpointConnectionError

from killstream.http.gate import Gate


class FakeClock:
    """A monotonic clock that advances only on sleep (or `advance`); records every sleep."""

    def __init__(self, start: float = 1000.0):
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingGate(Gate):
    """The real gate, keeping the time (on its own clock) it let each request through: where a
    request's start is measured without the scheduling delay before it reaches a server."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.starts: list[float] = []

    def pace(self, *, finishing: bool = False) -> float:
        deadline = super().pace(finishing=finishing)
        self.starts.append(self.last_start)
        return deadline


def _body(entry: dict) -> Any:
    """An entry's body, decoded when it is JSON."""
    try:
        return json.loads(entry["MessageBody"])
    except ValueError:
        return entry["MessageBody"]


class RecordingSqs:
    """Stands in for boto3's SQS client in SendMessageBatch: records every call; refuses the
    entries `refuse(entry)` says no to, and, per killmail id in `fail`, that many times first
    (-1: always); lets `call_errors` whole calls fail first; and hands the rest to `forward` (a
    real client) or, without one, accepts them. `accepted` holds (time on `clock`, bodies)."""

    def __init__(
        self,
        *,
        forward: Any = None,
        refuse: Callable[[dict], bool] = lambda entry: False,
        fail: dict[int, int] | None = None,
        call_errors: int = 0,
        clock: Callable[[], float] = lambda: 0.0,
    ):
        self.forward = forward
        self.refuse = refuse
        self.fail = dict(fail or {})
        self.call_errors = call_errors
        self.clock = clock
        self.calls: list[list[dict]] = []
        self.accepted: list[tuple[float, list[dict]]] = []

    def send_message_batch(self, QueueUrl: str, Entries: list[dict]) -> dict:
        assert len(Entries) <= 10
        self.calls.append(Entries)
        if self.call_errors:
            self.call_errors -= 1
            raise EndpointConnectionError(endpoint_url=QueueUrl)
        passing, failed = [], []
        for entry in Entries:
            killmail_id = self._killmail_id(entry)
            failing = killmail_id is not None and self.fail.get(killmail_id, 0) != 0
            if failing and killmail_id is not None:
                self.fail[killmail_id] -= 1
            if failing or self.refuse(entry):
                failed.append({"Id": entry["Id"], "SenderFault": False, "Code": "InternalError", "Message": "busy"})
            else:
                passing.append(entry)
        if self.forward is not None and passing:
            response = self.forward.send_message_batch(QueueUrl=QueueUrl, Entries=passing)
        else:
            response = {"Successful": [{"Id": e["Id"], "MessageId": f"m-{e['Id']}"} for e in passing]}
        taken = {success["Id"] for success in response.get("Successful", [])}
        self.accepted.append((self.clock(), [_body(e) for e in passing if e["Id"] in taken]))
        return {"Successful": response.get("Successful", []), "Failed": failed + response.get("Failed", [])}

    @staticmethod
    def _killmail_id(entry: dict) -> int | None:
        attribute = (entry.get("MessageAttributes") or {}).get("killmail_id")
        return int(attribute["StringValue"]) if attribute else None

    @property
    def sent(self) -> list[Any]:
        """The body of every entry accepted, in order."""
        return [body for _, bodies in self.accepted for body in bodies]


class FakeSsm:
    """An SSM client holding one parameter's value (None: the parameter does not exist)."""

    class exceptions:
        class ParameterNotFound(Exception):
            pass

    def __init__(self, clock: Callable[[], float], value: str | None = "none"):
        self.clock = clock
        self.value = value
        self.puts: list[tuple[float, str]] = []

    def get_parameter(self, Name: str) -> dict:
        if self.value is None:
            raise self.exceptions.ParameterNotFound(Name)
        return {"Parameter": {"Name": Name, "Value": self.value}}

    def put_parameter(self, Name: str, Value: str, Type: str, Overwrite: bool) -> None:
        self.puts.append((self.clock(), Value))
        self.value = Value


class RecordingEvents:
    """Stands in for boto3's EventBridge client in PutEvents: records every call; fails the
    entries of the killmail ids in `fail`, that many times first (-1: always), and lets
    `call_errors` whole calls fail first; hands the rest to `forward` (a real client) or, without
    one, accepts them."""

    def __init__(self, *, forward: Any = None, fail: dict[int, int] | None = None, call_errors: int = 0):
        self.forward = forward
        self.fail = dict(fail or {})
        self.call_errors = call_errors
        self.calls: list[list[dict]] = []

    def put_events(self, Entries: list[dict]) -> dict:
        assert len(Entries) <= 10
        self.calls.append(Entries)
        if self.call_errors:
            self.call_errors -= 1
            raise EndpointConnectionError(endpoint_url="https://events.us-east-1.amazonaws.com")
        results: list[dict | None] = []
        passing = []
        for entry in Entries:
            killmail_id = json.loads(entry["Detail"]).get("killmail_id")
            if self.fail.get(killmail_id, 0) != 0:
                self.fail[killmail_id] -= 1
                results.append({"ErrorCode": "InternalFailure", "ErrorMessage": "simulated"})
            else:
                results.append(None)
                passing.append(entry)
        forwarded = iter(
            self.forward.put_events(Entries=passing)["Entries"]
            if self.forward is not None and passing
            else [{"EventId": f"e-{n}"} for n in range(len(passing))]
        )
        entries = [result if result is not None else next(forwarded) for result in results]
        return {"FailedEntryCount": sum("ErrorCode" in e for e in entries), "Entries": entries}

    @property
    def details(self) -> list[dict]:
        """Every entry's detail sent, in order (failed ones included)."""
        return [json.loads(entry["Detail"]) for call in self.calls for entry in call]
