"""Redrive through SQS StartMessageMoveTask, which moto lacks: botocore's Stubber plays SQS."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from killstream_workstation.dlq.inspect import HOLD_SECONDS
from killstream_workstation.dlq.redrive import MOVE_TASK_POLL_SECONDS, redrive
from killstream_workstation.dlq.render import format_progress, format_result

DLQ_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/killstream-dlq"
QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/killstream-killmails"
DLQ_ARN = "arn:aws:sqs:us-east-1:123456789012:killstream-dlq"
QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:killstream-killmails"
BODY = '{"killmail_id":131234567,"hash":"0123456789abcdef0123456789abcdef01234567","zkb":{},"source":"r2z2"}'


@pytest.fixture
def sqs(monkeypatch):
    for variable in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS", "AWS_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    client = boto3.client("sqs", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def expect_arns(stubber: Stubber) -> None:
    for url, arn in ((DLQ_URL, DLQ_ARN), (QUEUE_URL, QUEUE_ARN)):
        stubber.add_response(
            "get_queue_attributes", {"Attributes": {"QueueArn": arn}}, {"QueueUrl": url, "AttributeNames": ["QueueArn"]}
        )


def expect_task_listing(stubber: Stubber, status: str, moved: int, **extra) -> None:
    task = {
        "Status": status,
        "SourceArn": DLQ_ARN,
        "DestinationArn": QUEUE_ARN,
        "ApproximateNumberOfMessagesMoved": moved,
        "ApproximateNumberOfMessagesToMove": 40,
        "StartedTimestamp": 1795000000000,
        **extra,
    }
    stubber.add_response("list_message_move_tasks", {"Results": [task]}, {"SourceArn": DLQ_ARN, "MaxResults": 1})


def expect_empty_receive(stubber: Stubber) -> None:
    stubber.add_response(
        "receive_message",
        {"Messages": []},
        {
            "QueueUrl": DLQ_URL,
            "MaxNumberOfMessages": 10,
            "VisibilityTimeout": HOLD_SECONDS,
            "WaitTimeSeconds": 1,
            "MessageAttributeNames": ["All"],
            "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
        },
    )


def test_move_task_moves_dlq_to_source_queue_and_reports_progress_until_completed(sqs):
    client, stubber = sqs
    expect_arns(stubber)
    stubber.add_response(
        "start_message_move_task", {"TaskHandle": "task-1"}, {"SourceArn": DLQ_ARN, "DestinationArn": QUEUE_ARN}
    )
    expect_task_listing(stubber, "RUNNING", 0, TaskHandle="task-1")
    expect_task_listing(stubber, "RUNNING", 25, TaskHandle="task-1")
    expect_task_listing(stubber, "COMPLETED", 40)
    progress, sleeps = [], []

    result = redrive(client, DLQ_URL, QUEUE_URL, progress=progress.append, sleep=sleeps.append)

    assert [(p.status, p.moved, p.to_move) for p in progress] == [
        ("RUNNING", 0, 40),
        ("RUNNING", 25, 40),
        ("COMPLETED", 40, 40),
    ]
    assert [format_progress(p) for p in progress][1] == "move task RUNNING: 25/40 moved (62%)"
    assert sleeps == [MOVE_TASK_POLL_SECONDS] * 2
    assert (result.method, result.status, result.moved, result.to_move) == ("move_task", "COMPLETED", 40, 40)
    assert result.task_handle == "task-1" and result.ok
    assert format_result(result) == "move task task-1 COMPLETED: 40 of 40 moved"


def test_failed_move_task_is_reported_with_its_reason(sqs):
    client, stubber = sqs
    expect_arns(stubber)
    stubber.add_response("start_message_move_task", {"TaskHandle": "task-2"})
    expect_task_listing(stubber, "FAILED", 3, FailureReason="AWS.SimpleQueueService.NonExistentQueue")

    result = redrive(client, DLQ_URL, QUEUE_URL, sleep=pytest.fail)

    assert (result.status, result.moved, result.ok) == ("FAILED", 3, False)
    assert result.failure_reason == "AWS.SimpleQueueService.NonExistentQueue"


@pytest.mark.parametrize(
    "code, status",
    [
        ("UnsupportedOperation", 400),
        ("AWS.SimpleQueueService.UnsupportedOperation", 400),
        ("InvalidAction", 400),
        ("UnknownOperationException", 400),
        ("NotImplemented", 501),
        ("500", 500),  # moto's server: an HTML 500 page, no SQS error document
    ],
)
def test_endpoint_without_move_tasks_falls_back_to_the_loop(sqs, code, status):
    client, stubber = sqs
    expect_arns(stubber)
    stubber.add_client_error("start_message_move_task", service_error_code=code, http_status_code=status)
    expect_empty_receive(stubber)

    result = redrive(client, DLQ_URL, QUEUE_URL, sleep=pytest.fail)

    assert result.method == "loop" and result.moved == 0 and result.ok
    assert code in result.fallback_reason
    assert format_result(result).startswith("fell back to the receive/send/delete loop")


@pytest.mark.parametrize("code", ["AccessDenied", "RequestThrottled", "ResourceNotFoundException"])
def test_other_move_task_errors_are_not_hidden_by_a_fallback(sqs, code):
    client, stubber = sqs
    expect_arns(stubber)
    stubber.add_client_error("start_message_move_task", service_error_code=code, http_status_code=400)

    with pytest.raises(ClientError, match=code):
        redrive(client, DLQ_URL, QUEUE_URL)


def test_error_type_filter_uses_the_loop_without_trying_a_move_task(sqs):
    client, stubber = sqs
    stubber.add_response(
        "receive_message",
        {
            "Messages": [
                {
                    "MessageId": "m-1",
                    "ReceiptHandle": "rh-1",
                    "Body": BODY,
                    "Attributes": {"ApproximateReceiveCount": "1"},
                    "MessageAttributes": {
                        "error_type": {"DataType": "String", "StringValue": "esi_not_found"},
                        "error_message": {"DataType": "String", "StringValue": "ESI 404"},
                        "source": {"DataType": "String", "StringValue": "r2z2"},
                        "killmail_id": {"DataType": "Number", "StringValue": "131234567"},
                    },
                }
            ]
        },
    )
    stubber.add_response(
        "send_message_batch",
        {
            "Successful": [{"Id": "0", "MessageId": "m-2", "MD5OfMessageBody": "d41d8cd98f00b204e9800998ecf8427e"}],
            "Failed": [],
        },
        {
            "QueueUrl": QUEUE_URL,
            "Entries": [
                {
                    "Id": "0",
                    "MessageBody": BODY,
                    "MessageAttributes": {
                        "source": {"DataType": "String", "StringValue": "r2z2"},
                        "killmail_id": {"DataType": "Number", "StringValue": "131234567"},
                    },
                }
            ],
        },
    )
    stubber.add_response(
        "delete_message_batch",
        {"Successful": [{"Id": "0"}], "Failed": []},
        {"QueueUrl": DLQ_URL, "Entries": [{"Id": "0", "ReceiptHandle": "rh-1"}]},
    )
    expect_empty_receive(stubber)

    result = redrive(client, DLQ_URL, QUEUE_URL, error_types=["esi_not_found"])

    assert (result.method, result.moved, result.by_error_type) == ("loop", 1, {"esi_not_found": 1})


@pytest.mark.parametrize("options", [{"dry_run": True}, {"prefer_move_task": False}])
def test_dry_run_and_no_move_task_never_start_a_move_task(sqs, options):
    client, stubber = sqs
    expect_empty_receive(stubber)

    assert redrive(client, DLQ_URL, QUEUE_URL, **options).method == "loop"
