"""The backfill in the cloud, in parts: the backfill Lambda's steps as the state machine calls them
(plan, a day, a day given up on) against a local EVE Ref and PostgreSQL, with their metrics; and
`killstream backfill --cloud` against moto's Step Functions and CloudFormation: the stack's output
found, the execution started with the range as its input, followed until it ends. (moto runs no
Map state; the definition itself is checked in tests/infrastructure/test_template.py.)"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import boto3
import pytest

from killstream_workstation import corpus
from killstream_workstation.cli.backfill_cloud import days_done, follow, not_complete
from killstream_workstation.cli.main import main
from killstream_workstation.local.lambda_runtime import LambdaContext, load_handler_module
from killstream_workstation.simulators.everef import MISSING, NOT_JSON, EverefServer
from tests.support.stored import count_rows

UA = "killstream-tests/1.0 (ci@example.com)"
DAYS = [date(2026, 9, 1) + timedelta(days=n) for n in range(3)]
ASL = Path(__file__).resolve().parents[2] / "statemachine" / "backfill.asl.json"


@pytest.fixture
def handler_module(monkeypatch, database_url):
    monkeypatch.setenv("USER_AGENT", UA)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "killstream")
    monkeypatch.delenv("DB_SECRET_ARN", raising=False)
    return load_handler_module("backfill")


def emf(text: str) -> dict[str, float]:
    """The metric values of the EMF documents printed."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            doc = json.loads(line)
            for metric in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
                value = doc[metric["Name"]]
                values[metric["Name"]] = values.get(metric["Name"], 0) + (
                    sum(value) if isinstance(value, list) else value
                )
    return values


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_the_lambdas_steps_as_the_state_machine_calls_them(handler_module, monkeypatch, conn, capsys):
    with EverefServer(compresslevel=1) as everef:
        everef.add_all(corpus.on_days(corpus.renumber(corpus.sample(), 60, first_id=700_000_000), DAYS))
        everef.fault(DAYS[1], NOT_JSON)
        everef.fault(DAYS[2], MISSING)
        monkeypatch.setenv("EVEREF_URL", everef.url)
        context = LambdaContext("killstream-backfill", 900)
        plan = handler_module.handler({"action": "plan", "input": {"from": f"{DAYS[0]}", "to": f"{DAYS[-1]}"}}, context)
        # the archive's counts read once for the range, handed to each day: no totals.json a day
        assert plan == {"days": [{"day": f"{day}", "expected": 20} for day in DAYS], "source": "everef"}
        capsys.readouterr()

        def day(n: int) -> dict:  # as the Map's ItemSelector and the BackfillDay step pass it
            return {"action": "day", "day": plan["days"][n]["day"], "expected": plan["days"][n]["expected"]}

        first = handler_module.handler(day(0) | {"source": "everef"}, context)
        assert (first["status"], first["inserted"], first["source"]) == ("complete", 20, "everef")
        assert emf(capsys.readouterr().out) == {
            "BackfillDays": 1,
            "BackfillDaysFailed": 0,
            "BackfillKillmailsStored": 20,
            "BackfillKillmailErrors": 0,
        }
        second = handler_module.handler(day(1) | {"source": "everef"}, context)
        assert (second["status"], second["failed"], second["reasons"]) == ("incomplete", 1, {"not_json": 1})
        assert emf(capsys.readouterr().out)["BackfillDaysFailed"] == 1  # settled: not retried, counted
        # an archive that cannot be read: the invocation fails, so the state machine retries it
        with pytest.raises(handler_module.BackfillDayFailed, match="404"):
            handler_module.handler(day(2) | {"source": "everef"}, context)
        assert emf(capsys.readouterr().out)["BackfillDaysFailed"] == 0  # not yet: a retry may succeed
        # the retries spent: the Catch's step gives the day's error result, counted once
        error = {"Error": "BackfillDayFailed", "Cause": '{"errorMessage": "2026-09-03: no archive (404)"}'}
        given_up = handler_module.handler(
            {"action": "failed", "day": plan["days"][2]["day"], "source": "everef", "error": error}, context
        )
        assert given_up["status"] == "error" and "404" in given_up["error"]
        assert emf(capsys.readouterr().out) == {"BackfillDaysFailed": 1}
        assert [r.path for r in everef.requests].count("/killmails/totals.json") == 1
        # a day the plan found no count for is downloaded to find out
        unknown = handler_module.handler(
            {"action": "day", "day": f"{DAYS[0]}", "expected": None, "source": "everef"}, context
        )
        assert unknown["status"] == "complete" and unknown["already_stored"] == 20
        assert [r.path for r in everef.requests].count("/killmails/totals.json") == 1
    assert count_rows(conn, "killmails") == 39
    assert not_complete(json.dumps({"days": [first, second, given_up]})) == [second, given_up]


@pytest.fixture
def state_machine(aws) -> str:
    text = ASL.read_text()
    for name, value in {
        "BackfillFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:killstream-dev-backfill",
        "BackfillConcurrency": "4",
        "Partition": "aws",
    }.items():
        text = text.replace(f"${{{name}}}", value)
    sfn = boto3.client("stepfunctions")
    arn = sfn.create_state_machine(
        name="killstream-dev-backfill", definition=text, roleArn="arn:aws:iam::123456789012:role/backfill-sfn"
    )["stateMachineArn"]
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {"BackfillStateMachineArn": {"Value": arn}},
    }
    boto3.client("cloudformation").create_stack(StackName="killstream-dev", TemplateBody=json.dumps(template))
    return arn


def test_cloud_starts_the_stacks_state_machine_with_the_range(state_machine, capsys):
    status = main(["backfill", "--cloud", "--from", f"{DAYS[0]}", "--to", f"{DAYS[-1]}", "--no-wait"])
    assert status == 0
    sfn = boto3.client("stepfunctions")
    (execution,) = sfn.list_executions(stateMachineArn=state_machine)["executions"]
    described = sfn.describe_execution(executionArn=execution["executionArn"])
    assert json.loads(described["input"]) == {"from": f"{DAYS[0]}", "to": f"{DAYS[-1]}", "source": "everef"}
    assert execution["name"].startswith("backfill-20260901-20260903-")
    assert execution["executionArn"] in capsys.readouterr().out


def test_cloud_names_a_stack_without_the_state_machine(aws, capsys):
    status = main(["backfill", "--cloud", "--from", f"{DAYS[0]}", "--to", f"{DAYS[-1]}", "--stack-name", "nope"])
    err = capsys.readouterr().err.strip()
    assert status == 1 and len(err.splitlines()) == 1 and "stack 'nope'" in err and "--stack-name" in err


def test_following_an_execution_reports_until_it_ends(state_machine):
    sfn = boto3.client("stepfunctions")
    arn = sfn.start_execution(stateMachineArn=state_machine, input="{}")["executionArn"]
    said: list[str] = []
    waits = 0

    def sleep(seconds: float) -> None:
        nonlocal waits
        waits += 1
        if waits == 2:  # someone stops it from the console
            sfn.stop_execution(executionArn=arn, cause="stopped by hand")

    described = follow(sfn, arn, 3, say=said.append, poll_seconds=0, sleep=sleep)
    assert described["status"] == "ABORTED" and waits == 2
    assert said == ["running: 0/3 days", "aborted: 0/3 days"]


def test_days_done_counts_map_iterations_from_the_history():
    events = [
        {"type": "MapIterationStarted"},
        {"type": "MapIterationSucceeded"},
        {"type": "MapIterationSucceeded"},
        {"type": "MapIterationFailed"},
        {"type": "TaskSucceeded"},
    ]
    assert days_done(events) == (3, 1)
    assert days_done([]) == (0, 0)
