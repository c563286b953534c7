"""Before a live run: is the chosen feed there? Asked of the local R2Z2 and RedisQ, a refusing
RedisQ (its 2026 shutdown answer) and a port nobody listens on."""

import socket

import pytest

from killstream_workstation.local.preflight import FeedUnreachable, check_feed, feed_problem
from killstream_workstation.simulators.r2z2 import R2Z2Server
from killstream_workstation.simulators.redisq import RedisQServer

AGENT = "killstream-tests/1.0 (ci@example.com)"


@pytest.fixture
def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_feed_that_answers_is_fine():
    with R2Z2Server() as r2z2:
        assert feed_problem("r2z2", r2z2.url, AGENT) is None
    with RedisQServer() as redisq:
        redisq.publish({"killmail_id": 1}, "a" * 40, {"totalValue": 1.0})
        assert feed_problem("redisq", redisq.url, AGENT) is None
        # asked without a queueID: no queue was made, nothing popped
        assert redisq.queues == {}


def test_an_unreachable_feed_says_so_with_its_meaning(closed_port):
    assert feed_problem("r2z2", f"http://127.0.0.1:{closed_port}/ephemeral", AGENT) == "connection refused"
    with pytest.raises(FeedUnreachable) as raised:
        check_feed("r2z2", f"http://127.0.0.1:{closed_port}/ephemeral", AGENT)
    message = str(raised.value)
    assert message.startswith(f"cannot reach the live feed (R2Z2) at http://127.0.0.1:{closed_port}/ephemeral")
    assert 'make run ARGS="--replay"' in message


def test_redisq_gets_the_same_line_and_the_news_of_its_shutdown(closed_port):
    url = f"http://127.0.0.1:{closed_port}/listen.php"
    with pytest.raises(FeedUnreachable) as raised:
        check_feed("redisq", url, AGENT)
    message = str(raised.value)
    assert message.startswith(f"cannot reach RedisQ at {url} (connection refused)")
    assert "2026-05-31" in message and "REDISQ_URL" in message and "--replay" in message


def test_a_refusing_redisq_is_reported_in_its_own_words():
    with RedisQServer(shutdown=True, shutdown_delay=0) as redisq:
        problem = feed_problem("redisq", redisq.url, AGENT)
    assert problem is not None and problem.startswith("it refuses service: redisq is shutting down")


def test_an_r2z2_that_refuses_us_is_not_taken_for_a_feed():
    with R2Z2Server() as r2z2:  # the local R2Z2 refuses a request without a User-Agent
        assert (
            feed_problem("r2z2", r2z2.url, "")
            == "it refuses service: HTTP 403 Forbidden: send a descriptive User-Agent"
        )
