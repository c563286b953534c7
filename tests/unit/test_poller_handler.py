"""The poller Lambda's handler as the runtime loads it: nothing is built at import, and a bad
configuration fails the invocation with a log line naming the variable."""

from __future__ import annotations

import pytest

from killstream.errors import ConfigError
from killstream_workstation.local.lambda_runtime import LambdaContext, load_handler_module

VARIABLES = ("KILLSTREAM_SOURCE", "QUEUE_URL", "CURSOR_PARAMETER", "USER_AGENT", "POLL_PACING_MS")


@pytest.fixture
def env(monkeypatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_importing_the_handler_reads_no_configuration(env):
    module = load_handler_module("poller")
    assert callable(module.handler)


# A failed invocation has no metrics; Powertools warns about that.
@pytest.mark.filterwarnings("ignore:No application metrics to publish")
@pytest.mark.parametrize(
    "settings, variable",
    [
        ({"QUEUE_URL": "http://localhost/q", "CURSOR_PARAMETER": "/c"}, "USER_AGENT"),
        (
            {
                "QUEUE_URL": "http://localhost/q",
                "CURSOR_PARAMETER": "/c",
                "USER_AGENT": "killstream/0.1 (a@b.c)",
                "POLL_PACING_MS": "fast",
            },
            "POLL_PACING_MS",
        ),
        (
            {"QUEUE_URL": "http://localhost/q", "USER_AGENT": "killstream/0.1 (a@b.c)", "KILLSTREAM_SOURCE": "redisq"},
            "REDISQ_QUEUE_ID",
        ),
    ],
)
def test_a_bad_variable_fails_the_invocation_naming_it(env, caplog, settings, variable):
    env.delenv("REDISQ_QUEUE_ID", raising=False)
    for name, value in settings.items():
        env.setenv(name, value)
    module = load_handler_module("poller")
    with pytest.raises(ConfigError) as error:
        module.handler({}, LambdaContext("poller", 60))
    assert error.value.variable == variable
    logged = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(logged) == 1 and logged[0].variable == variable and variable in logged[0].getMessage()
