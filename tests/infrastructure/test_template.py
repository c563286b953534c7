"""template.yaml, samconfig.toml and events/ against what issue 5 asks of the SAM application.

Structure tests read template.yaml with a loader that knows CloudFormation's short tags. The tool
tests run cfn-lint, `sam validate --lint` and `sam build` (make test installs both tools)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.support.imports import closure, import_graph, imported_names, package_modules

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"


class CfnLoader(yaml.SafeLoader):
    """!Ref X -> {"Ref": X}, !GetAtt A.B -> {"Fn::GetAtt": [A, B]}, !Sub ... -> {"Fn::Sub": ...}."""


def _short_tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _short_tag)

T = yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)
R = T["Resources"]
ALERT_TEMPLATE = ROOT / "alerts" / "template.yaml"
A = yaml.load(ALERT_TEMPLATE.read_text(), Loader=CfnLoader)
AR = A["Resources"]


def REF(name: str) -> dict:
    return {"Ref": name}


def ARN(name: str) -> dict:
    return {"Fn::GetAtt": [name, "Arn"]}


def props(name: str) -> dict:
    """A resource's properties (of either template); for functions with the Globals they inherit
    (SAM semantics)."""
    if name not in R:
        return AR[name]["Properties"]
    merged = dict(T.get("Globals", {}).get("Function", {})) if R[name]["Type"] == "AWS::Serverless::Function" else {}
    return {**merged, **R[name]["Properties"]}


def alert_env() -> dict:
    return AR["NotifierFunction"]["Properties"]["Environment"]["Variables"]


def env(function: str) -> dict:
    return props(function)["Environment"]["Variables"]


def grants(role: str) -> dict[str | None, set[tuple[str, str]]]:
    """{condition or None: {(action, resource as JSON)}} over the role's inline policies."""
    out: dict[str | None, set[tuple[str, str]]] = {}
    for policy in props(role)["Policies"]:
        condition = None
        if "Fn::If" in policy:  # [condition, policy, AWS::NoValue]
            condition, policy, absent = policy["Fn::If"]
            assert absent == REF("AWS::NoValue")
        for st in policy["PolicyDocument"]["Statement"]:
            assert st["Effect"] == "Allow" and not {"NotAction", "NotResource", "Condition"} & set(st)
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            out.setdefault(condition, set()).update(
                (a, json.dumps(r, sort_keys=True)) for a in actions for r in resources
            )
    return out


def pairs(actions, resource) -> set[tuple[str, str]]:
    return {(a, json.dumps(resource, sort_keys=True)) for a in actions}


def tool(name: str) -> str | None:
    beside = Path(sys.executable).parent / name  # the test environment's own copy comes first
    return str(beside) if beside.exists() else shutil.which(name)


# ------------------------------------------------------------------ functions and layers


FUNCTIONS = ("PollerFunction", "FetcherFunction", "EnricherFunction", "ReconcilerFunction", "BackfillFunction")


def test_functions_run_python313_on_arm64_built_by_makefiles():
    assert {n for n, r in R.items() if r["Type"] == "AWS::Serverless::Function"} == set(FUNCTIONS)
    for name in FUNCTIONS:
        p = props(name)
        assert (p["Runtime"], p["Architectures"], p["Handler"]) == ("python3.13", ["arm64"], "app.handler")
        assert R[name]["Metadata"]["BuildMethod"] == "makefile"
        assert p["Layers"] == [REF("DependenciesLayer"), REF("KillstreamLayer")]
        assert "Policies" not in p and p["Role"] == ARN(name.replace("Function", "Role"))
    for name in ("DependenciesLayer", "KillstreamLayer"):
        assert R[name]["Metadata"]["BuildMethod"] == "makefile"
        assert props(name)["CompatibleArchitectures"] == ["arm64"]
        assert props(name)["CompatibleRuntimes"] == ["python3.13"]


def test_poller_runs_alone_every_minute_without_retries():
    p = props("PollerFunction")
    assert p["Timeout"] == 60 and p["ReservedConcurrentExecutions"] == 1
    assert p["EventInvokeConfig"] == {"MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": 60}
    (event,) = p["Events"].values()
    assert event["Type"] in ("Schedule", "ScheduleV2")
    expression = event["Properties"].get("Schedule") or event["Properties"].get("ScheduleExpression")
    assert expression in ("rate(1 minute)", "cron(* * * * ? *)")
    assert int(env("PollerFunction")["POLL_BUDGET_SECONDS"]) < p["Timeout"]


def test_reconciler_runs_daily_on_a_parameter_with_lambdas_longest_timeout():
    p = props("ReconcilerFunction")
    assert p["Timeout"] == 900 and p["MemorySize"] >= 256
    (event,) = p["Events"].values()
    assert event["Type"] == "Schedule" and event["Properties"]["Schedule"] == REF("ReconcileSchedule")
    schedule = T["Parameters"]["ReconcileSchedule"]
    assert re.fullmatch(r"cron\(0 [1-9] \* \* \? \*\)", schedule["Default"])  # a few hours after midnight UTC
    assert re.fullmatch(schedule["AllowedPattern"], schedule["Default"])
    assert p["EventInvokeConfig"]["MaximumRetryAttempts"] == 0
    variables = env("ReconcilerFunction")
    assert variables["HISTORY_URL"] == "https://r2z2.zkillboard.com/history"
    assert variables["QUEUE_URL"] == REF("KillmailQueue")
    assert variables["RECONCILE_DAYS"] == REF("ReconcileDays") and T["Parameters"]["ReconcileDays"]["Default"] == 7
    assert variables["RECONCILE_RAW_THRESHOLD"] == REF("ReconcileRawThreshold")
    assert int(variables["HISTORY_PACING_MS"]) >= 500  # well under R2Z2's ~15-20 requests a second
    # it reaches the database where the fetcher does
    assert p["VpcConfig"] == props("FetcherFunction")["VpcConfig"]
    for name in ("DATABASE_URL", "DB_SECRET_ARN", "DB_SSLMODE", "DB_SSLROOTCERT"):
        assert variables[name] == env("FetcherFunction")[name], name


ASL = ROOT / "statemachine" / "backfill.asl.json"


def definition() -> dict:
    """The backfill state machine's definition as Step Functions gets it: the template's
    substitutions applied (each a stand-in value of its kind)."""
    substitutions = props("BackfillStateMachine")["DefinitionSubstitutions"]
    stand_ins = {"BackfillFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:backfill"}
    stand_ins |= {"BackfillConcurrency": "4", "Partition": "aws"}
    text = ASL.read_text()
    assert set(re.findall(r"\$\{(\w+)\}", text)) == set(substitutions) == set(stand_ins)
    for name, value in stand_ins.items():
        text = text.replace(f"${{{name}}}", value)
    return json.loads(text)


def test_backfill_runs_one_day_per_invocation_well_inside_its_timeout_beside_the_database():
    p = props("BackfillFunction")
    assert p["Timeout"] == 900 and p["MemorySize"] >= 1024 and "Events" not in p
    assert p["EventInvokeConfig"]["MaximumRetryAttempts"] == 0  # the state machine retries a day itself
    assert p["VpcConfig"] == props("FetcherFunction")["VpcConfig"] and p["LoggingConfig"] == {
        "LogGroup": REF("BackfillLogGroup")
    }
    variables = env("BackfillFunction")
    assert variables["EVEREF_URL"] == "https://data.everef.net/killmails"
    assert variables["HISTORY_URL"] == env("ReconcilerFunction")["HISTORY_URL"]
    for name in ("DATABASE_URL", "DB_SECRET_ARN", "DB_SSLMODE", "DB_SSLROOTCERT", "USER_AGENT"):
        assert variables[name] == env("FetcherFunction")[name], name


def test_backfill_state_machine_plans_days_then_maps_them_with_retries_and_per_day_errors():
    machine = props("BackfillStateMachine")
    assert R["BackfillStateMachine"]["Type"] == "AWS::Serverless::StateMachine" and machine["Type"] == "STANDARD"
    assert machine["DefinitionUri"] == "statemachine/backfill.asl.json"
    assert machine["Role"] == ARN("BackfillStateMachineRole") and "Policies" not in machine
    assert machine["DefinitionSubstitutions"] == {
        "BackfillFunctionArn": ARN("BackfillFunction"),
        "BackfillConcurrency": REF("BackfillConcurrency"),
        "Partition": REF("AWS::Partition"),
    }
    concurrency = T["Parameters"]["BackfillConcurrency"]
    assert concurrency["Type"] == "Number" and 1 <= concurrency["Default"] <= concurrency["MaxValue"] <= 40
    asl = definition()
    states = asl["States"]
    assert asl["StartAt"] == "Settings" and set(states) == {"Settings", "PlanDays", "BackfillDays", "Done"}
    # Settings -> PlanDays -> BackfillDays -> Done
    assert states["Settings"]["Next"] == "PlanDays" and states["PlanDays"]["Next"] == "BackfillDays"
    assert states["BackfillDays"]["Next"] == "Done" and states["Done"]["End"] is True
    # the concurrency: the parameter, parsed to a number, read by the Map
    assert states["Settings"]["Parameters"]["max_concurrency.$"] == "States.StringToJson('4')"
    plan = states["PlanDays"]
    assert plan["Resource"] == "arn:aws:states:::lambda:invoke"
    assert plan["Parameters"]["Payload"] == {"action": "plan", "input.$": "$.input"}
    days = states["BackfillDays"]
    assert days["Type"] == "Map" and days["ItemsPath"] == "$.plan.days"
    assert days["MaxConcurrencyPath"] == "$.max_concurrency" and "MaxConcurrency" not in days
    assert days["ItemProcessor"]["ProcessorConfig"] == {"Mode": "INLINE"}
    inner = days["ItemProcessor"]["States"]
    day = inner[days["ItemProcessor"]["StartAt"]]
    assert days["ItemSelector"] == {
        "day.$": "$$.Map.Item.Value.day",
        "expected.$": "$$.Map.Item.Value.expected",
        "source.$": "$.plan.source",
    }
    assert day["Parameters"]["Payload"] == {
        "action": "day",
        "day.$": "$.day",
        "expected.$": "$.expected",
        "source.$": "$.source",
    }
    assert day["Parameters"]["FunctionName"] == "arn:aws:lambda:us-east-1:123456789012:function:backfill"
    assert day["TimeoutSeconds"] > props("BackfillFunction")["Timeout"]
    # every failure of a day is retried with backoff, then caught: a per-day error, not a failed run
    every = [r for r in day["Retry"] if r["ErrorEquals"] == ["States.ALL"]]
    assert every and all(r["MaxAttempts"] >= 1 and r["BackoffRate"] > 1 and r["IntervalSeconds"] >= 30 for r in every)
    assert day["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "DayFailed"}]
    failed = inner["DayFailed"]
    assert failed["Parameters"]["Payload"]["action"] == "failed" and failed["End"] is True
    assert failed["Catch"][0]["ErrorEquals"] == ["States.ALL"]
    assert inner[failed["Catch"][0]["Next"]]["Type"] == "Pass"  # even then, the day ends as an error
    assert "Catch" not in days  # nothing a day does can fail the Map


def test_enricher_runs_alone_every_minute_within_its_minute_and_beside_the_database():
    from killstream.enrich.enricher import RESERVE_SECONDS, RUN_BUDGET_SECONDS

    p = props("EnricherFunction")
    assert p["ReservedConcurrentExecutions"] == 1
    assert RUN_BUDGET_SECONDS + RESERVE_SECONDS < p["Timeout"] <= 60  # a run ends before the next starts
    assert p["EventInvokeConfig"] == {"MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": 60}
    (event,) = p["Events"].values()
    assert event["Type"] == "Schedule" and event["Properties"]["Schedule"] == "rate(1 minute)"
    assert p["VpcConfig"] == props("FetcherFunction")["VpcConfig"]  # it reaches the same database
    assert p["LoggingConfig"] == {"LogGroup": REF("EnricherLogGroup")}
    for name in ("DATABASE_URL", "DB_SECRET_ARN", "DB_SSLMODE", "DB_SSLROOTCERT", "ESI_URL", "USER_AGENT"):
        assert env("EnricherFunction")[name] == env("FetcherFunction")[name], name


def test_fetcher_consumes_the_queue_at_the_esi_cap():
    p = props("FetcherFunction")
    (event,) = p["Events"].values()
    e = event["Properties"]
    assert event["Type"] == "SQS" and e["Queue"] == ARN("KillmailQueue")
    assert e["BatchSize"] == REF("FetcherBatchSize") and e["MaximumBatchingWindowInSeconds"] <= 2
    batch_size = T["Parameters"]["FetcherBatchSize"]
    assert batch_size["MinValue"] == 1 and batch_size["MaxValue"] == 10_000  # SQS's limits with a window
    assert batch_size["Default"] > 10 and e["MaximumBatchingWindowInSeconds"] >= 1  # over 10 needs a window
    assert e["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert e["ScalingConfig"]["MaximumConcurrency"] == p["ReservedConcurrentExecutions"] == REF("FetcherConcurrency")
    concurrency = T["Parameters"]["FetcherConcurrency"]
    assert concurrency["Default"] == 2 and concurrency["MinValue"] >= 2  # SQS MaximumConcurrency is 2..1000
    assert "3,600" in concurrency["Description"] and "EsiParallelism" in concurrency["Description"]


def test_queues_encryption_visibility_and_dead_letter_wiring():
    queue, dlq = props("KillmailQueue"), props("KillmailDLQ")
    assert queue["SqsManagedSseEnabled"] is True and dlq["SqsManagedSseEnabled"] is True
    assert queue["VisibilityTimeout"] >= 6 * props("FetcherFunction")["Timeout"]
    assert queue["RedrivePolicy"] == {"deadLetterTargetArn": ARN("KillmailDLQ"), "maxReceiveCount": 5}
    # Item 11: a queue's MaximumMessageSize still defaults to 256 KiB; SQS takes 1 MiB when asked
    assert queue["MaximumMessageSize"] == dlq["MaximumMessageSize"] == 1_048_576
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600 >= queue.get("MessageRetentionPeriod", 345600)
    cursor = props("CursorParameter")
    assert cursor["Type"] == "String" and not str(cursor["Value"]).isdigit()
    assert env("PollerFunction")["CURSOR_PARAMETER"] == REF("CursorParameter")


# ------------------------------------------------------------------ permissions


def test_poller_may_only_enqueue_and_keep_its_cursor():
    name = props("CursorParameter")["Name"]["Fn::Sub"]
    cursor_arn = {"Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter" + name}
    assert grants("PollerRole") == {
        None: (
            pairs(["logs:CreateLogStream", "logs:PutLogEvents"], ARN("PollerLogGroup"))
            | pairs(["sqs:SendMessage"], ARN("KillmailQueue"))
            | pairs(["ssm:GetParameter", "ssm:PutParameter"], cursor_arn)
        )
    }


def test_fetcher_may_only_consume_dead_letter_and_read_the_secret():
    secret = {
        "Fn::If": ["CreateDb", {"Fn::GetAtt": ["Database", "MasterUserSecret.SecretArn"]}, REF("DatabaseSecretArn")]
    }
    assert env("FetcherFunction")["DB_SECRET_ARN"] == secret
    eni = [
        {"Fn::Sub": f"arn:${{AWS::Partition}}:ec2:${{AWS::Region}}:${{AWS::AccountId}}:{kind}/*"}
        for kind in ("network-interface", "subnet", "security-group")
    ]
    vpc = set().union(
        *(
            pairs(
                [
                    "ec2:CreateNetworkInterface",
                    "ec2:DeleteNetworkInterface",
                    "ec2:AssignPrivateIpAddresses",
                    "ec2:UnassignPrivateIpAddresses",
                ],
                r,
            )
            for r in eni
        )
    )
    assert grants("FetcherRole") == {
        None: (
            pairs(["logs:CreateLogStream", "logs:PutLogEvents"], ARN("FetcherLogGroup"))
            | pairs(["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"], ARN("KillmailQueue"))
            | pairs(["sqs:SendMessage"], ARN("KillmailDLQ"))
            | pairs(["secretsmanager:GetSecretValue"], secret)
            | pairs(["events:PutEvents"], ARN("KillmailBus"))
        ),
        # Only when the fetcher joins a VPC: Lambda's ENI management, which EC2 cannot scope further.
        "InVpc": vpc | pairs(["ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"], "*"),
    }
    # The enricher: its own logs and the database secret; ESI needs no AWS permission.
    assert env("EnricherFunction")["DB_SECRET_ARN"] == secret
    assert grants("EnricherRole") == {
        None: (
            pairs(["logs:CreateLogStream", "logs:PutLogEvents"], ARN("EnricherLogGroup"))
            | pairs(["secretsmanager:GetSecretValue"], secret)
        ),
        "InVpc": vpc | pairs(["ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"], "*"),
    }
    # Item 14: the action list of AWS's managed AWSLambdaVPCAccessExecutionRole (v3, edited
    # 2024-01-05), scoped; logs:CreateLogGroup is not needed: the template creates the log group.
    managed = {
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "ec2:CreateNetworkInterface",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeSubnets",
        "ec2:DeleteNetworkInterface",
        "ec2:AssignPrivateIpAddresses",
        "ec2:UnassignPrivateIpAddresses",
    }
    for role in ("FetcherRole", "EnricherRole", "ReconcilerRole"):
        granted = {action for condition in grants(role).values() for action, _ in condition}
        assert managed - granted == {"logs:CreateLogGroup"}, role


def test_reconciler_may_only_enqueue_and_read_the_secret():
    secret = {
        "Fn::If": ["CreateDb", {"Fn::GetAtt": ["Database", "MasterUserSecret.SecretArn"]}, REF("DatabaseSecretArn")]
    }
    fetcher = grants("FetcherRole")
    assert grants("ReconcilerRole") == {
        None: (
            pairs(["logs:CreateLogStream", "logs:PutLogEvents"], ARN("ReconcilerLogGroup"))
            | pairs(["sqs:SendMessage"], ARN("KillmailQueue"))
            | pairs(["secretsmanager:GetSecretValue"], secret)
        ),
        "InVpc": fetcher["InVpc"],  # Lambda's ENI management, only in the VPC, as the fetcher's
    }


def test_backfill_may_only_read_the_secret_and_its_state_machine_only_invoke_it():
    secret = {
        "Fn::If": ["CreateDb", {"Fn::GetAtt": ["Database", "MasterUserSecret.SecretArn"]}, REF("DatabaseSecretArn")]
    }
    assert grants("BackfillRole") == {
        None: (
            pairs(["logs:CreateLogStream", "logs:PutLogEvents"], ARN("BackfillLogGroup"))
            | pairs(["secretsmanager:GetSecretValue"], secret)
        ),
        "InVpc": grants("FetcherRole")["InVpc"],
    }
    assert grants("BackfillStateMachineRole") == {None: pairs(["lambda:InvokeFunction"], ARN("BackfillFunction"))}
    p = props("BackfillStateMachineRole")
    assert "ManagedPolicyArns" not in p
    assert p["AssumeRolePolicyDocument"]["Statement"] == [
        {"Effect": "Allow", "Principal": {"Service": "states.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ]


def test_no_wildcards_and_no_other_policies():
    policies = ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::RolePolicy")
    assert not [n for resources in (R, AR) for n, r in resources.items() if r["Type"] in policies]
    for role in ("PollerRole", "FetcherRole", "EnricherRole", "ReconcilerRole", "NotifierRole", "BackfillRole"):
        p = props(role)
        assert "ManagedPolicyArns" not in p
        assert p["AssumeRolePolicyDocument"]["Statement"] == [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ]
        for action, resource in grants(role)[None]:
            assert "*" not in action and "*" not in resource, (role, action, resource)


def test_no_secret_in_environment_variables():
    for variables in [env(function) for function in FUNCTIONS] + [alert_env()]:
        for name, value in variables.items():
            assert not re.search(r"PASSWORD|TOKEN|PRIVATE|(?<!DB_)SECRET(?!_ARN)", name), name
            text = json.dumps(value)
            assert not re.search(r"://[^/\s\"]*@|password", text, re.I), (name, text)
    pattern = T["Parameters"]["DatabaseUrl"]["AllowedPattern"]
    assert re.fullmatch(pattern, "postgresql://db.example.com:5432/killstream")
    assert not re.fullmatch(pattern, "postgresql://user:hunter2@db.example.com/killstream")


def test_environment_names_equal_the_config_contract():
    powertools = {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL"}
    poller = {
        "KILLSTREAM_SOURCE",
        "R2Z2_URL",
        "REDISQ_URL",
        "REDISQ_QUEUE_ID",
        "REDISQ_TTW",
        "REDISQ_FILTER",
        "POLL_PACING_MS",
        "POLL_CATCHUP_PACING_MS",
        "POLL_BUDGET_SECONDS",
        "QUEUE_URL",
        "CURSOR_PARAMETER",
        "USER_AGENT",
    }
    fetcher = {
        "ESI_URL",
        "ESI_COMPATIBILITY_DATE",
        "ESI_PARALLELISM",
        "USER_AGENT",
        "DLQ_URL",
        "DATABASE_URL",
        "DB_SECRET_ARN",
        "DB_SSLMODE",
        "DB_SSLROOTCERT",
        "EVENT_BUS_NAME",
    }
    enricher = {
        "ESI_URL",
        "ESI_COMPATIBILITY_DATE",
        "USER_AGENT",
        "DATABASE_URL",
        "DB_SECRET_ARN",
        "DB_SSLMODE",
        "DB_SSLROOTCERT",
    }
    # The reconciler's own, and the database's; ESI_URL, ESI_COMPATIBILITY_DATE, ESI_PARALLELISM and
    # DLQ_URL it reads too, for the CLI without a queue, and the template leaves them out: with
    # QUEUE_URL set it never calls ESI.
    reconciler = {
        "HISTORY_URL",
        "HISTORY_PACING_MS",
        "RECONCILE_DAYS",
        "RECONCILE_RAW_THRESHOLD",
        "QUEUE_URL",
        "USER_AGENT",
        "DATABASE_URL",
        "DB_SECRET_ARN",
        "DB_SSLMODE",
        "DB_SSLROOTCERT",
    }
    notifier = {"WEBHOOK_SECRET_ARN", "WEBHOOK_KIND", "ALERT_DLQ_URL", "USER_AGENT"}
    backfill = {
        "EVEREF_URL",
        "HISTORY_URL",
        "USER_AGENT",
        "DATABASE_URL",
        "DB_SECRET_ARN",
        "DB_SSLMODE",
        "DB_SSLROOTCERT",
    }
    # Both ways against killstream/config.py: every name it reads is set, and it reads every name set.
    config = (ROOT / "layers/killstream/killstream/config.py").read_text()
    read = set(re.findall(r'"([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)"', config))
    assert read == poller | fetcher | enricher | reconciler | notifier | backfill
    assert set(alert_env()) == notifier | powertools
    assert alert_env()["POWERTOOLS_SERVICE_NAME"] == "notifier"
    assert set(env("PollerFunction")) == poller | powertools
    assert set(env("FetcherFunction")) == fetcher | powertools
    assert set(env("EnricherFunction")) == enricher | powertools
    assert set(env("ReconcilerFunction")) == reconciler | powertools
    assert set(env("BackfillFunction")) == backfill | powertools
    assert env("BackfillFunction")["POWERTOOLS_SERVICE_NAME"] == "backfill"
    assert env("ReconcilerFunction")["POWERTOOLS_SERVICE_NAME"] == "reconciler"
    assert env("PollerFunction")["POWERTOOLS_SERVICE_NAME"] == "poller"
    assert env("FetcherFunction")["POWERTOOLS_SERVICE_NAME"] == "fetcher"
    assert env("EnricherFunction")["POWERTOOLS_SERVICE_NAME"] == "enricher"
    assert env("FetcherFunction")["DB_SSLROOTCERT"] == "/opt/rds-global-bundle.pem"
    assert T["Parameters"]["PollCatchupPacingMs"]["Default"] == 100  # as killstream.config's default
    assert T["Parameters"]["EsiCompatibilityDate"]["Default"] == "2026-08-18"
    assert "$(ARTIFACTS_DIR)/rds-global-bundle.pem" in (ROOT / "layers/dependencies/Makefile").read_text()


# ------------------------------------------------------------------ alarms, dashboard, outputs, database

ALARMS = {  # logical id: (namespace, metric, dimension name, dimension value)
    "DlqNotEmptyAlarm": (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        "QueueName",
        {"Fn::GetAtt": ["KillmailDLQ", "QueueName"]},
    ),
    "QueueBacklogAlarm": (
        "AWS/SQS",
        "ApproximateAgeOfOldestMessage",
        "QueueName",
        {"Fn::GetAtt": ["KillmailQueue", "QueueName"]},
    ),
    "PollerErrorsAlarm": ("AWS/Lambda", "Errors", "FunctionName", REF("PollerFunction")),
    "StreamStalledAlarm": ("killstream", "PackagesReceived", "service", "poller"),
    "FetcherErrorsAlarm": ("AWS/Lambda", "Errors", "FunctionName", REF("FetcherFunction")),
    "PermanentFailuresAlarm": ("killstream", "PermanentFailures", "service", "fetcher"),
    "DayIncompleteAlarm": ("killstream", "DaysStillIncomplete", "service", "reconciler"),
    "ReconcilerErrorsAlarm": ("AWS/Lambda", "Errors", "FunctionName", REF("ReconcilerFunction")),
    "NamesBacklogAlarm": ("killstream", "NamesPending", "service", "enricher"),
    "EnricherErrorsAlarm": ("AWS/Lambda", "Errors", "FunctionName", REF("EnricherFunction")),
    "EventPublishFailuresAlarm": ("killstream", "EventPublishFailures", "service", "fetcher"),
    "BackfillDaysFailedAlarm": ("killstream", "BackfillDaysFailed", "service", "backfill"),
    "BackfillExecutionsFailedAlarm": ("AWS/States", "ExecutionsFailed", "StateMachineArn", REF("BackfillStateMachine")),
}


def test_alarms_exist_and_notify_the_topic():
    alarms = {n for n, r in R.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert alarms == set(ALARMS) | {"ThrottlesAlarm"}
    for name in alarms:
        assert props(name)["AlarmActions"] == [REF("AlarmTopic")], name
    for name, (namespace, metric, dimension, value) in ALARMS.items():
        p = props(name)
        assert (p["Namespace"], p["MetricName"], p["Dimensions"]) == (
            namespace,
            metric,
            [{"Name": dimension, "Value": value}],
        )
    assert props("QueueBacklogAlarm")["Threshold"] == 300
    incomplete = props("DayIncompleteAlarm")  # the day's run, once a day; the state holds between runs
    assert (incomplete["Period"], incomplete["Threshold"], incomplete["TreatMissingData"]) == (86400, 1, "ignore")
    stalled = props("StreamStalledAlarm")
    assert stalled["Period"] * stalled["EvaluationPeriods"] == 1800 and stalled["TreatMissingData"] == "breaching"
    throttled = [m["MetricStat"]["Metric"] for m in props("ThrottlesAlarm")["Metrics"] if "MetricStat" in m]
    assert {(m["MetricName"], m["Dimensions"][0]["Value"]["Ref"]) for m in throttled} == {
        ("Throttles", function) for function in FUNCTIONS
    }
    backlog = props("NamesBacklogAlarm")  # every run of 15 minutes left ids unnamed
    assert (backlog["Statistic"], backlog["Period"] * backlog["DatapointsToAlarm"], backlog["Threshold"]) == (
        "Minimum",
        900,
        1,
    )
    assert R["AlarmTopic"]["Type"] == "AWS::SNS::Topic" and R["AlarmEmailSubscription"]["Condition"] == "HasAlarmEmail"


def test_dashboard_is_json_and_shows_every_metric():
    body = re.sub(r"\$\{[^}]+\}", "x", props("Dashboard")["DashboardBody"]["Fn::Sub"])
    text = json.dumps(json.loads(body))
    metrics = (
        "PackagesReceived PackagesEnqueued EmptyPolls RateLimited SourceErrors InvalidPackages EsiDroppedForSize "
        "SequenceGaps CursorLag PollSeconds SourceRefused EnqueueFailures KillmailsStored KillmailsDuplicate "
        "ZkbUpdated EsiFetches EsiErrors EsiRateLimited PermanentFailures TransientFailures IngestLagSeconds DbWriteMs "
        "NamesResolved NamesUnresolvable NamesPending "
        "PlaceholderPackages UpdatePointersFollowed UpdatePointersExpired "
        "DaysChecked KillmailsMissing KillmailsRecovered DaysIncomplete DaysStillIncomplete HistoryErrors "
        "HistoryRequests EventsPublished EventPublishFailures AlertsPosted "
        "AlertsDuplicate AlertsRetried AlertsDeadLettered WebhookRateLimited "
        "BackfillDays BackfillDaysFailed BackfillKillmailsStored BackfillKillmailErrors"
    )
    assert [m for m in metrics.split() if f'"{m}"' not in text] == []
    from killstream.observability import Metric

    published = {value for name, value in vars(Metric).items() if name.isupper()}
    assert published == set(metrics.split()), "a metric constant without its widget, or a widget for none"
    alarms = {n for n, r in R.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert [a for a in alarms if f"${{{a}.Arn}}" not in props("Dashboard")["DashboardBody"]["Fn::Sub"]] == []


def test_outputs_and_optional_database():
    assert {
        "KillmailQueueUrl",
        "KillmailDLQUrl",
        "PollerFunctionName",
        "FetcherFunctionName",
        "EnricherFunctionName",
        "EnricherLogGroupName",
        "ReconcilerFunctionName",
        "ReconcilerLogGroupName",
        "BackfillStateMachineArn",
        "BackfillFunctionName",
        "BackfillLogGroupName",
        "DashboardUrl",
        "KillmailBusName",
        "KillmailBusArn",
        "DependenciesLayerArn",
        "KillstreamLayerArn",
    } <= set(T["Outputs"])
    db = R["Database"]
    assert db["Condition"] == "CreateDb" and db["DeletionPolicy"] == "Snapshot"
    p = props("Database")
    assert (p["Engine"], p["DBInstanceClass"]) == ("postgres", "db.t4g.micro")
    assert p["ManageMasterUserPassword"] is True and p["StorageEncrypted"] is True and p["PubliclyAccessible"] is False
    assert all(p.get("Description") for p in T["Parameters"].values())


# ------------------------------------------------------------------ killmail events and alert rules


def test_the_fetcher_publishes_on_the_stack_s_own_bus():
    assert R["KillmailBus"]["Type"] == "AWS::Events::EventBus"
    assert props("KillmailBus")["Name"] == {"Fn::Sub": "${AWS::StackName}-killmails"}
    assert env("FetcherFunction")["EVENT_BUS_NAME"] == REF("KillmailBus")
    assert T["Outputs"]["KillmailBusName"]["Value"] == REF("KillmailBus")


def test_the_stack_s_alert_rule_is_the_alert_template_instantiated_when_a_webhook_is_given():
    alert = R["Alert"]
    assert alert["Type"] == "AWS::Serverless::Application" and alert["Condition"] == "HasAlert"
    assert alert["Properties"]["Location"] == "alerts/template.yaml"
    given = alert["Properties"]["Parameters"]
    assert set(given) == set(A["Parameters"])
    assert given["EventBusName"] == REF("KillmailBus") and given["WebhookUrl"] == REF("AlertWebhookUrl")
    assert given["DependenciesLayerArn"] == REF("DependenciesLayer") and given["AlarmTopicArn"] == REF("AlarmTopic")
    assert T["Conditions"]["HasAlert"] == {"Fn::Not": [{"Fn::Equals": [REF("AlertWebhookUrl"), ""]}]}
    from killstream_workstation.alerts.patterns import DEFAULT_PATTERN

    # one default, meaning kills worth >= 10 B ISK, everywhere it is written
    for default in (T["Parameters"]["AlertPattern"]["Default"], A["Parameters"]["EventPattern"]["Default"]):
        assert json.loads(default) == DEFAULT_PATTERN
    assert DEFAULT_PATTERN["detail"]["total_value_millions"] == [{"numeric": [">=", 10_000]}]


def test_the_webhook_url_is_a_noecho_secret_nothing_else_shows():
    for spec in (T["Parameters"]["AlertWebhookUrl"], A["Parameters"]["WebhookUrl"]):
        assert spec["NoEcho"] is True
    assert AR["WebhookSecret"]["Type"] == "AWS::SecretsManager::Secret"
    assert props("WebhookSecret")["SecretString"] == REF("WebhookUrl")
    uses = json.dumps({k: v for k, v in AR.items() if k != "WebhookSecret"}) + json.dumps(A["Outputs"])
    assert '"WebhookUrl"' not in uses  # only the secret takes the URL
    assert '"AlertWebhookUrl"' not in json.dumps(T["Outputs"])
    assert alert_env()["WEBHOOK_SECRET_ARN"] == REF("WebhookSecret")


def test_the_rule_sends_its_matches_to_the_alert_queue_and_only_it_may():
    rule = props("AlertRule")
    assert AR["AlertRule"]["Type"] == "AWS::Events::Rule" and rule["State"] == "ENABLED"
    assert rule["EventBusName"] == REF("EventBusName") and rule["EventPattern"] == REF("EventPattern")
    (target,) = rule["Targets"]
    assert target["Arn"] == ARN("AlertQueue") and target["DeadLetterConfig"] == {"Arn": ARN("AlertDLQ")}
    (statement,) = props("AlertQueuesPolicy")["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"} and statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": ARN("AlertRule")}}
    assert props("AlertQueuesPolicy")["Queues"] == [REF("AlertQueue"), REF("AlertDLQ")]


def test_alert_queue_and_dlq():
    queue, dlq = props("AlertQueue"), props("AlertDLQ")
    assert queue["SqsManagedSseEnabled"] is True and dlq["SqsManagedSseEnabled"] is True
    assert queue["VisibilityTimeout"] >= 6 * props("NotifierFunction")["Timeout"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == ARN("AlertDLQ")
    assert queue["RedrivePolicy"]["maxReceiveCount"] >= 5
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600 and AR["AlertDLQ"]["DeletionPolicy"] == "Retain"
    assert alert_env()["ALERT_DLQ_URL"] == REF("AlertDLQ")
    alarms = {n: props(n) for n, r in AR.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    dlq_alarm = alarms["AlertDlqNotEmptyAlarm"]
    assert dlq_alarm["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["AlertDLQ", "QueueName"]}}]
    assert alarms["NotifierErrorsAlarm"]["Dimensions"][0]["Value"] == REF("NotifierFunction")
    for alarm in alarms.values():
        assert alarm["AlarmActions"] == {"Fn::If": ["HasAlarmTopic", [REF("AlarmTopicArn")], REF("AWS::NoValue")]}


def test_the_notifier_is_a_thin_arm64_handler_capped_on_its_event_source():
    p = props("NotifierFunction")
    assert (p["Runtime"], p["Architectures"], p["Handler"]) == ("python3.13", ["arm64"], "app.handler")
    assert AR["NotifierFunction"]["Metadata"]["BuildMethod"] == "makefile"
    assert p["CodeUri"] == "../functions/notifier" and (ROOT / "functions" / "notifier" / "app.py").exists()
    assert p["Layers"] == [REF("DependenciesLayerArn"), REF("KillstreamLayerArn")]
    assert "ReservedConcurrentExecutions" not in p  # it would take from the account's pool
    (event,) = p["Events"].values()
    e = event["Properties"]
    assert event["Type"] == "SQS" and e["Queue"] == ARN("AlertQueue")
    assert e["FunctionResponseTypes"] == ["ReportBatchItemFailures"] and e["ScalingConfig"]["MaximumConcurrency"] == 2
    assert p["LoggingConfig"] == {"LogGroup": REF("NotifierLogGroup")}


def test_the_notifier_may_only_consume_dead_letter_read_its_secret_and_log():
    assert grants("NotifierRole") == {
        None: (
            pairs(["logs:CreateLogStream", "logs:PutLogEvents"], ARN("NotifierLogGroup"))
            | pairs(["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"], ARN("AlertQueue"))
            | pairs(["sqs:SendMessage"], ARN("AlertDLQ"))
            | pairs(["secretsmanager:GetSecretValue"], REF("WebhookSecret"))
        )
    }


def test_an_alert_stack_names_nothing_fixed_so_instances_live_side_by_side():
    named = {
        (resource, key): value
        for resource, r in AR.items()
        for key, value in r.get("Properties", {}).items()
        if key in ("Name", "LogGroupName", "AlarmName", "QueueName", "FunctionName", "RoleName", "TopicName")
    }
    assert not {key for _, key in named} - {
        "LogGroupName",
        "AlarmName",
    }  # queues, rule, role, function: CloudFormation's
    assert named and all("${AWS::StackName}" in json.dumps(value) for value in named.values()), named


# ------------------------------------------------------------------ samconfig.toml and events/


def test_samconfig_environments_match_the_parameters():
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    assert {"default", "prod"} <= set(config)
    for stage, environment in (("dev", config["default"]), ("prod", config["prod"])):
        assert environment["build"]["parameters"] == {"cached": True, "parallel": True}
        deploy = environment["deploy"]["parameters"]
        assert deploy["confirm_changeset"] is True and "CAPABILITY_IAM" in deploy["capabilities"]
        # the artifact bucket is the user's choice (--resolve-s3 or --s3-bucket): neither is forced
        assert "resolve_s3" not in deploy and "s3_bucket" not in deploy
        overrides = dict(item.split("=", 1) for item in deploy["parameter_overrides"])
        assert overrides["Stage"] == stage
        for key, value in overrides.items():
            spec, value = T["Parameters"][key], value.strip('"')
            assert value in spec.get("AllowedValues", [value]), key
            assert re.fullmatch(spec.get("AllowedPattern", ".*"), value), key
            if spec["Type"] == "Number":
                assert spec["MinValue"] <= int(value) <= spec["MaxValue"], key


def test_events_match_the_package_contract():
    tick = json.loads((ROOT / "events/scheduled-tick.json").read_text())
    assert tick["detail-type"] == "Scheduled Event" and tick["source"] == "aws.events"
    for name, inline in (("sqs-inline-esi.json", True), ("sqs-metadata-only.json", False)):
        (record,) = json.loads((ROOT / "events" / name).read_text())["Records"]
        body = json.loads(record["body"])
        assert {"killmail_id", "hash", "zkb", "source", "sequence_id", "uploaded_at"} <= set(body)
        assert ("esi" in body) is inline and re.fullmatch(r"[0-9a-f]{40}", body["hash"])
        assert record["messageAttributes"]["killmail_id"]["stringValue"] == str(body["killmail_id"])
        assert record["messageAttributes"]["source"]["stringValue"] == body["source"] == "r2z2"


# ------------------------------------------------------------------ the tools, as CI runs them


def required_tool(name: str) -> str:
    """requirements-dev.txt pins cfn-lint and the SAM CLI: missing is a failure, not a skip."""
    path = tool(name)
    assert path, f"{name} is not installed: run `make test`, which installs requirements-dev.txt"
    return path


def run(command: list[str], cwd: Path = ROOT, environment: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "SAM_CLI_TELEMETRY": "0",
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        **(environment or {}),
    }
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_cfn_lint_is_clean():
    # The only suppressions live in template.yaml, each with its reason (W1030, W1035).
    result = run([required_tool("cfn-lint"), "--", "template.yaml", "alerts/template.yaml"])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("template", ["template.yaml", "alerts/template.yaml"])
def test_sam_validate_lint_is_clean(template):
    result = run([required_tool("sam"), "validate", "--lint", "--template-file", template, "--region", "us-east-1"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_more_alert_rules_are_the_alert_template_again_not_a_fork(tmp_path):
    """Two more rules beside the stack's own: alerts/template.yaml instantiated twice more, with
    other patterns and webhooks, from the main stack's outputs; the combination lints clean."""
    outputs = {
        "EventBusName": "killstream-dev-killmails",
        "UserAgent": "killstream/0.1 (ops@example.com)",
        "DependenciesLayerArn": "arn:aws:lambda:us-east-1:123456789012:layer:killstream-dev-dependencies:3",
        "KillstreamLayerArn": "arn:aws:lambda:us-east-1:123456789012:layer:killstream-dev-killstream:3",
        "AlarmTopicArn": "arn:aws:sns:us-east-1:123456789012:killstream-dev-AlarmTopic-x",
    }
    rules = {
        "TitansToDiscord": ("capital-kills.json", "https://discord.com/api/webhooks/1/a", "auto"),
        "SoloToSlack": ("solo-kills.json", "https://hooks.slack.com/services/T/B/c", "slack"),
    }
    wrapper = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Transform": "AWS::Serverless-2016-10-31",
        "Resources": {
            name: {
                "Type": "AWS::Serverless::Application",
                "Properties": {
                    "Location": str(ALERT_TEMPLATE),
                    "Parameters": {
                        **outputs,
                        "EventPattern": (ROOT / "alerts" / "patterns" / pattern).read_text().strip(),
                        "WebhookUrl": url,
                        "WebhookKind": kind,
                    },
                },
            }
            for name, (pattern, url, kind) in rules.items()
        },
    }
    path = tmp_path / "more-alerts.yaml"
    path.write_text(yaml.safe_dump(wrapper))
    required = {name for name, spec in A["Parameters"].items() if "Default" not in spec}
    assert required == set(outputs) - {"AlarmTopicArn"} | {"WebhookUrl"}  # what the outputs and a URL give
    for command in (
        [required_tool("cfn-lint"), "--", str(path)],
        [required_tool("sam"), "validate", "--lint", "--template-file", str(path), "--region", "us-east-1"],
    ):
        result = run(command)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--s3-bucket", "my-own-bucket"], "/my-own-bucket/killstream-dev/"),  # uploads to the user's bucket
        (["--resolve-s3"], "Could not connect to the endpoint URL"),  # looks up SAM's managed bucket
        ([], "S3 Bucket not specified, use --s3-bucket to specify a bucket name, or use --resolve-s3"),
    ],
    ids=["own bucket", "managed bucket", "neither"],
)
def test_sam_deploy_takes_either_bucket_choice_with_samconfig(flags, says):
    """As far as it gets without AWS: to the upload (an endpoint nobody answers on), never to
    "Cannot use both --resolve-s3 and --s3-bucket"."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{s.getsockname()[1]}"
    result = run(
        [required_tool("sam"), "deploy", "--template-file", "template.yaml", "--no-confirm-changeset", *flags],
        environment={
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_ENDPOINT_URL": nowhere,
            "AWS_MAX_ATTEMPTS": "1",
        },
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Cannot use both" not in output
    assert says in output, output


@pytest.fixture(scope="module")
def sam_build(tmp_path_factory) -> Path:
    """One `sam build` for the tests of what it builds."""
    build = tmp_path_factory.mktemp("sam") / "build"
    result = run(
        [required_tool("sam"), "build", "--template-file", "template.yaml", "--build-dir", str(build), "--no-cached"]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return build


def test_sam_build_makes_arm64_layers(sam_build):
    site = sam_build / "DependenciesLayer" / "python"
    assert list(site.glob("psycopg2/_psycopg.cpython-313-aarch64-linux-gnu.so"))
    assert not (site / "boto3").exists() and not (site / "botocore").exists()  # the runtime provides them
    package = sam_build / "KillstreamLayer" / "python" / "killstream"
    assert (package / "__init__.py").exists()
    sql = {p.name for p in (ROOT / "layers/killstream/killstream/storage/sql").glob("*.sql")}
    assert sql and sql == {p.name for p in (package / "storage" / "sql").glob("*.sql")}
    for function in FUNCTIONS:
        assert (sam_build / function / "app.py").exists()
    assert (sam_build / "Alert" / "NotifierFunction" / "app.py").exists()  # the nested alert rule
    assert (sam_build / "Alert" / "template.yaml").exists()


def test_the_built_layer_holds_exactly_the_modules_the_functions_import(sam_build):
    """The layer ships its package whole, so the package must be exactly what the functions
    import: the transitive closure of functions/*/app.py over killstream. Its only other files
    are the SQL migrations (package data) and the bytecode the build may add."""
    layer = sam_build / "KillstreamLayer" / "python"
    shipped = package_modules(layer, "killstream")
    graph = import_graph(shipped)
    handlers = set().union(*(imported_names(app, "app") for app in sorted(ROOT.glob("functions/*/app.py"))))
    needed = closure(handlers, graph)
    assert sorted(set(shipped) - needed) == [], "modules in the layer that no function imports"
    assert needed == set(shipped)
    others = [
        path.relative_to(layer).as_posix()
        for path in layer.rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    ]
    assert others and all(re.fullmatch(r"killstream/storage/sql/\d{3}_\w+\.sql", other) for other in others), others


def test_the_local_pipeline_mirrors_the_template():
    """`make run` promises the same queue behaviour as the deployed stack."""
    from killstream import config
    from killstream_workstation.local import aws, pipeline

    queue = props("KillmailQueue")
    assert config.FETCHER_TIMEOUT_SECONDS == props("FetcherFunction")["Timeout"]  # the database limits derive from it
    (event,) = props("FetcherFunction")["Events"].values()
    assert config.FETCHER_BATCH_SIZE == T["Parameters"]["FetcherBatchSize"]["Default"]
    assert config.FETCHER_BATCHING_WINDOW_SECONDS == event["Properties"]["MaximumBatchingWindowInSeconds"]
    settings = pipeline.PipelineSettings(database_url="", user_agent="")
    assert (settings.batch_size, settings.batching_window) == (
        config.FETCHER_BATCH_SIZE,
        config.FETCHER_BATCHING_WINDOW_SECONDS,
    )
    assert pipeline.POLLER_TIMEOUT_SECONDS == props("PollerFunction")["Timeout"]
    assert pipeline.ENRICHER_TIMEOUT_SECONDS == props("EnricherFunction")["Timeout"]
    assert pipeline.RECONCILER_TIMEOUT_SECONDS == props("ReconcilerFunction")["Timeout"]
    schedule = T["Parameters"]["ReconcileSchedule"]["Default"]
    assert schedule == f"cron(0 {pipeline.RECONCILE_HOUR_UTC} * * ? *)"
    assert pipeline.PipelineSettings(database_url="", user_agent="").visibility_timeout == queue["VisibilityTimeout"]
    assert aws.MAX_RECEIVE_COUNT == queue["RedrivePolicy"]["maxReceiveCount"]
    assert aws.MAX_MESSAGE_SIZE == queue["MaximumMessageSize"] == props("KillmailDLQ")["MaximumMessageSize"]
    assert aws.DLQ_RETENTION_SECONDS == props("KillmailDLQ")["MessageRetentionPeriod"]
    alerts = props("AlertQueue")
    assert pipeline.NOTIFIER_TIMEOUT_SECONDS == props("NotifierFunction")["Timeout"]
    assert pipeline.AlertSettings("", "").visibility_timeout == alerts["VisibilityTimeout"]
    assert aws.ALERT_MAX_RECEIVE_COUNT == alerts["RedrivePolicy"]["maxReceiveCount"]
    assert aws.ALERT_DLQ_RETENTION_SECONDS == props("AlertDLQ")["MessageRetentionPeriod"]
