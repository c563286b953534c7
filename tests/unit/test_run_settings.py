"""`killstream run` refuses bad flags and settings before it starts anything: argparse for the
flags, the configuration contract (the Lambdas' own) for every variable, each a line naming it."""

import argparse

import pytest

from killstream_workstation.cli.commands import build_parser
from killstream_workstation.local.preflight import ConfigProblem, check_settings
from killstream_workstation.local.replay import LOCAL_QUEUE_ID

AGENT = "killstream-tests/1.0 (ci@example.com)"


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--rate", "0"], "--rate"),
        (["--rate", "-1"], "--rate"),
        (["--rate", "fast"], "--rate"),
        (["--rate", "nan"], "--rate"),
        (["--inline-ratio", "2"], "--inline-ratio"),
        (["--inline-ratio", "-0.1"], "--inline-ratio"),
        (["--budget", "0"], "--budget"),
        (["--budget", "901"], "--budget"),
        (["--pacing-ms", "-5"], "--pacing-ms"),
        (["--duration", "0"], "--duration"),
        (["--stats-every", "0"], "--stats-every"),
        (["--source", "kafka"], "--source"),
    ],
)
def test_a_bad_flag_is_refused_in_one_line_naming_it(capsys, argv, named):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["run", "--replay", *argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("killstream run: argument " + named)
    assert "see killstream run --help" in err


def test_good_flags_are_taken_as_given():
    args = build_parser().parse_args(
        ["run", "--rate", "0.5", "--inline-ratio", "1", "--budget", "1", "--pacing-ms", "0"]
    )
    assert (args.rate, args.inline_ratio, args.budget, args.pacing_ms) == (0.5, 1.0, 1, 0)


def check(env=None, **overrides):
    settings = {
        "user_agent": AGENT,
        "source": None,
        "pacing_ms": None,
        "budget_seconds": None,
        "queue_id": None,
        "replay": False,
    }
    return check_settings(env or {}, **{**settings, **overrides})


@pytest.mark.parametrize(
    "env, overrides, variable, flag",
    [
        ({"KILLSTREAM_SOURCE": "foo"}, {}, "KILLSTREAM_SOURCE", "--source"),
        ({"KILLSTREAM_SOURCE": "redisq"}, {}, "REDISQ_QUEUE_ID", "--queue-id"),
        ({}, {"source": "redisq"}, "REDISQ_QUEUE_ID", "--queue-id"),
        ({"POLL_PACING_MS": "abc"}, {}, "POLL_PACING_MS", "--pacing-ms"),
        ({"POLL_BUDGET_SECONDS": "0"}, {}, "POLL_BUDGET_SECONDS", "--budget"),
        ({"REDISQ_TTW": "11"}, {}, "REDISQ_TTW", None),
        ({"ESI_PARALLELISM": "0"}, {}, "ESI_PARALLELISM", None),
        ({"R2Z2_URL": "ftp://x"}, {}, "R2Z2_URL", None),
        # the reconciler's, which `run` runs once a day
        ({"HISTORY_URL": "ftp://x"}, {}, "HISTORY_URL", None),
        ({"RECONCILE_DAYS": "0"}, {}, "RECONCILE_DAYS", None),
        ({"RECONCILE_RAW_THRESHOLD": "many"}, {}, "RECONCILE_RAW_THRESHOLD", None),
        ({"HISTORY_PACING_MS": "-1"}, {}, "HISTORY_PACING_MS", None),
    ],
)
def test_every_setting_is_checked_up_front_naming_the_variable_and_its_flag(env, overrides, variable, flag):
    with pytest.raises(ConfigProblem) as raised:
        check(env, **overrides)
    message = str(raised.value)
    assert raised.value.variable == variable and message.startswith(f"configuration error: {variable}: ")
    assert (f"set by {flag} or {variable}" in message) if flag else "set by" not in message
    assert raised.value.exit_code == 2


def test_the_flags_win_over_the_environment():
    env = {"KILLSTREAM_SOURCE": "foo", "POLL_PACING_MS": "abc", "POLL_BUDGET_SECONDS": "0"}
    config = check(env, source="redisq", pacing_ms=20, budget_seconds=7, queue_id="mine").poller
    assert (config.source, config.pacing_ms, config.budget_seconds, config.redisq_queue_id) == ("redisq", 20, 7, "mine")


def test_a_redisq_replay_needs_no_queue_id_and_a_replay_ignores_the_live_url_it_replaces():
    checked = check({"REDISQ_URL": "ftp://not-used-offline"}, source="redisq", replay=True)
    assert checked.poller.redisq_queue_id == LOCAL_QUEUE_ID
    assert checked.extra_env == {}
    assert check(source="redisq", replay=True, queue_id="mine").extra_env == {"REDISQ_QUEUE_ID": "mine"}
    check({"R2Z2_URL": "ftp://not-used-offline", "ESI_URL": "nope"}, replay=True)
    # an R2Z2 replay's history is the local R2Z2's, paced as the pipeline paces it
    check({"HISTORY_URL": "ftp://not-used-offline", "HISTORY_PACING_MS": "abc"}, replay=True)
    # the URL of the other source is still read by the poller: checked as the Lambda would
    with pytest.raises(ConfigProblem, match="R2Z2_URL"):
        check({"R2Z2_URL": "ftp://x"}, source="redisq", replay=True)


@pytest.mark.parametrize(
    "agent, text",
    [
        ("myapp/1.0", "'myapp/1.0' has no contact"),
        ("myapp/1.0 ()", "must be 'app/version (contact)'"),
        ("my app", "must be 'app/version (contact)'"),
    ],
)
def test_a_user_agent_without_a_contact_is_told_so_not_that_it_is_missing(agent, text):
    with pytest.raises(ConfigProblem) as raised:
        check(user_agent=agent)
    assert text in str(raised.value) and "is required" not in str(raised.value)


def test_usage_errors_of_every_subcommand_are_one_line(capsys):
    for argv in (["frob"], ["db"], ["dlq", "--limit", "0"], ["invoke", "poller"]):
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args(argv)
        assert exited.value.code == 2
        assert capsys.readouterr().err.count("\n") == 1, argv


def test_debug_is_accepted_before_and_after_the_subcommand():
    parser = build_parser()
    assert parser.parse_args(["--debug", "stats"]).debug is True
    assert parser.parse_args(["stats", "--debug"]).debug is True
    assert parser.parse_args(["stats"]).debug is False
    assert isinstance(parser, argparse.ArgumentParser)
