"""The fetcher Lambda end to end on one machine: the real handler (functions/fetcher/app.py)
called with SQS events, the local ESI server, moto's SQS over HTTP as the DLQ, and a real
PostgreSQL. What is asserted is what a user would see: rows, batchItemFailures, DLQ messages,
requests that reached ESI, log lines and metrics."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter
from contextlib import closing

import boto3
import pytest

from killstream.config import DatabaseConfig
from killstream.errors import PermanentError
from killstream.fetcher.batch import write_records
from killstream.killmail import parse_killmail, parse_zkb
from killstream.observability import metrics
from killstream.package import Package
from killstream.storage.connection import Database, connect
from killstream.storage.writer import KillmailRecord, KillmailStore, Outcome
from killstream_workstation.corpus import split_hash, zkb_for
from killstream_workstation.local.lambda_runtime import LambdaContext, load_handler_module, sqs_record
from killstream_workstation.simulators.esi import EsiServer
from tests.support.stored import assert_stored_as, assert_zkb, count_rows

UA = "killstream-tests/0.1 (tests@example.com)"
needs_embedded_server = pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")), reason="stops the embedded server; DATABASE_URL is set"
)


def body(doc: dict, *, inline: bool, sequence_id: int | None = None, zkb: dict | None = None) -> str:
    esi, killmail_hash = split_hash(doc)
    return Package(
        killmail_id=doc["killmail_id"],
        hash=killmail_hash,
        zkb=zkb or zkb_for(doc),
        source="r2z2",
        esi=esi if inline else None,
        sequence_id=sequence_id,
    ).to_body()


def record(message_body: str, message_id: str | None = None) -> dict:
    return sqs_record(message_body, message_id or str(uuid.uuid4()))


class Harness:
    """The handler wired to local servers, as the Lambda runtime would call it."""

    def __init__(self, module, esi: EsiServer, dlq_url: str, database_url: str):
        self.module = module
        self.esi = esi
        self.dlq_url = dlq_url
        self.database_url = database_url

    def invoke(self, records: list[dict], timeout: float = 60.0) -> dict:
        return self.module.handler({"Records": records}, LambdaContext("fetcher", timeout))

    def dead_letters(self) -> list[dict]:
        sqs = boto3.client("sqs")
        letters: list[dict] = []
        while True:
            answer = sqs.receive_message(
                QueueUrl=self.dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=0
            )
            if not answer.get("Messages"):
                return letters
            for message in answer["Messages"]:
                attributes = {k: v["StringValue"] for k, v in message.get("MessageAttributes", {}).items()}
                letters.append({"body": message["Body"], **attributes})
                sqs.delete_message(QueueUrl=self.dlq_url, ReceiptHandle=message["ReceiptHandle"])

    def connect(self):
        return closing(connect(self.database_url))


@pytest.fixture
def make_harness(aws, database_url, monkeypatch):
    servers = []

    def make(docs, **env) -> Harness:
        esi = EsiServer(**env.pop("esi_options", {})).start()
        servers.append(esi)
        esi.add_many(docs)
        dlq_url = boto3.client("sqs").create_queue(QueueName="killstream-fetcher-dlq")["QueueUrl"]
        settings = {"DATABASE_URL": database_url, "ESI_URL": esi.url, "DLQ_URL": dlq_url, "USER_AGENT": UA, **env}
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        metrics.clear_metrics()
        return Harness(load_handler_module("fetcher"), esi, settings["DLQ_URL"], database_url)

    yield make
    for server in servers:
        server.stop()


def failures(response: dict) -> list[str]:
    return sorted(item["itemIdentifier"] for item in response["batchItemFailures"])


LOG_KEYS = ("killmail_id", "outcome", "total_value", "reason", "error_type")


def output(capfd, caplog) -> tuple[list[dict], Counter]:
    """(per-killmail log lines, metric totals from the EMF the handler printed) since the last call."""
    lines = [{key: getattr(r, key, None) for key in LOG_KEYS} for r in caplog.records if hasattr(r, "outcome")]
    caplog.clear()
    totals: Counter[str] = Counter()
    for line in capfd.readouterr().out.splitlines():
        if not line.startswith('{"_aws"'):
            continue
        doc = json.loads(line)
        for definition in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
            value = doc[definition["Name"]]
            totals[definition["Name"]] += sum(value) if isinstance(value, list) else value
    return lines, totals


def store_directly(database_url: str, docs: list[dict]) -> None:
    with closing(connect(database_url)) as conn:
        KillmailStore(conn).write(
            [
                KillmailRecord(
                    parse_killmail(split_hash(doc)[0]), doc["killmail_hash"], parse_zkb(zkb_for(doc)), "r2z2"
                )
                for doc in docs
            ]
        )


# --- one batch, every kind of message ----------------------------------------------------------


def test_a_mixed_batch_stores_the_good_dead_letters_the_bad_and_returns_the_transient(
    make_harness, sample_killmails, capfd, caplog
):
    docs = sample_killmails[:8]
    stored, inline, fetched, unknown_hash, mismatched, flaky, invalid_inline = docs[:7]
    h = make_harness(docs)
    store_directly(h.database_url, [stored])
    h.esi.fail(unknown_hash["killmail_id"], 404)
    h.esi.mismatch(mismatched["killmail_id"])
    h.esi.fail(flaky["killmail_id"], 503, times=None)
    broken = json.loads(body(invalid_inline, inline=True))
    broken["esi"]["killmail_time"] = "yesterday"
    records = {
        "stored": record(body(stored, inline=False)),
        "inline": record(body(inline, inline=True)),
        "fetched": record(body(fetched, inline=False)),
        "not-json": record('{"killmail_id": 5, "hash": '),
        "invalid": record(json.dumps(broken)),
        "unknown-hash": record(body(unknown_hash, inline=False)),
        "mismatched": record(body(mismatched, inline=False)),
        "flaky": record(body(flaky, inline=False)),
    }
    output(capfd, caplog)

    response = h.invoke(list(records.values()))

    assert failures(response) == [records["flaky"]["messageId"]]
    with h.connect() as conn:
        assert count_rows(conn, "killmails") == 3
        for doc in (stored, inline, fetched):
            assert_stored_as(conn, split_hash(doc)[0] | {"killmail_hash": doc["killmail_hash"]}, zkb_for(doc))
    letters = {letter["error_type"]: letter for letter in h.dead_letters()}
    assert sorted(letters) == ["esi_invalid_killmail", "esi_mismatch", "invalid_message", "validation_error"]
    assert letters["invalid_message"]["body"] == records["not-json"]["body"]
    assert "not JSON" in letters["invalid_message"]["error_message"]
    assert letters["validation_error"]["body"] == records["invalid"]["body"]
    assert "killmail_time" in letters["validation_error"]["error_message"]
    assert letters["validation_error"]["killmail_id"] == str(invalid_inline["killmail_id"])
    assert letters["esi_invalid_killmail"]["body"] == records["unknown-hash"]["body"]
    assert "404" in letters["esi_invalid_killmail"]["error_message"]
    assert letters["esi_mismatch"]["killmail_id"] == str(mismatched["killmail_id"])
    assert letters["esi_mismatch"]["source"] == "r2z2"
    # ESI was asked only for what the batch lacked; the 404 was not retried, the 503 was.
    assert h.esi.hits == Counter(
        {
            fetched["killmail_id"]: 1,
            unknown_hash["killmail_id"]: 1,
            mismatched["killmail_id"]: 1,
            flaky["killmail_id"]: 3,
        }
    )

    lines, totals = output(capfd, caplog)
    outcomes = Counter((line["killmail_id"], line["outcome"]) for line in lines)
    assert outcomes[(stored["killmail_id"], "skipped")] == 1
    assert outcomes[(inline["killmail_id"], "saved")] == 1
    assert outcomes[(fetched["killmail_id"], "fetching")] == 1
    assert outcomes[(fetched["killmail_id"], "saved")] == 1
    assert outcomes[(None, "failed")] == 1
    assert (inline["killmail_id"], "fetching") not in outcomes
    failed = {line["killmail_id"]: line for line in lines if line["outcome"] == "failed"}
    assert failed[flaky["killmail_id"]]["reason"].startswith("ESI answered 503")
    assert failed[flaky["killmail_id"]]["error_type"] == "esi_unavailable"
    saved = next(line for line in lines if line["outcome"] == "saved" and line["killmail_id"] == fetched["killmail_id"])
    assert saved["total_value"] == zkb_for(fetched)["totalValue"]
    assert {
        name: totals[name]
        for name in (
            "KillmailsStored",
            "KillmailsDuplicate",
            "ZkbUpdated",
            "EsiFetches",
            "EsiErrors",
            "PermanentFailures",
            "TransientFailures",
        )
    } == {
        "KillmailsStored": 2,
        "KillmailsDuplicate": 1,
        "ZkbUpdated": 0,
        "EsiFetches": 6,
        "EsiErrors": 4,
        "PermanentFailures": 4,
        "TransientFailures": 1,
    }
    assert totals["IngestLagSeconds"] > 0
    assert totals["DbWriteMs"] > 0


def test_the_transient_message_is_stored_on_redelivery(make_harness, sample_killmails):
    doc = sample_killmails[0]
    h = make_harness([doc])
    h.esi.fail(doc["killmail_id"], 503, times=3)
    message = record(body(doc, inline=False))
    assert failures(h.invoke([message])) == [message["messageId"]]
    assert failures(h.invoke([message])) == []
    with h.connect() as conn:
        assert_stored_as(conn, doc)
    assert h.dead_letters() == []


# --- what nobody foresaw fails its own record, not the batch ------------------------------------


def only_one_dead_lettered(h, records, docs, bad) -> dict:
    """The batch succeeds, every doc but `bad` is stored as sent, and `bad` is the one dead letter."""
    assert failures(h.invoke(records)) == []
    with h.connect() as conn:
        assert count_rows(conn, "killmails") == len(docs) - 1
        for doc in docs:
            if doc is not bad:
                assert_stored_as(conn, doc, zkb_for(doc))
    [letter] = h.dead_letters()
    return letter


def test_an_esi_body_nested_too_deeply_is_dead_lettered_alone_and_the_rest_stored(make_harness, sample_killmails):
    docs = sample_killmails[:4]
    nested = docs[1]
    h = make_harness(docs)
    h.esi.faults.script(body=b"[" * 100_000, when=f"/{nested['killmail_id']}/", times=None)
    records = [record(body(doc, inline=n % 2 == 0)) for n, doc in enumerate(docs)]

    letter = only_one_dead_lettered(h, records, docs, nested)
    assert (letter["error_type"], letter["killmail_id"]) == ("validation_error", str(nested["killmail_id"]))
    assert "nested too deeply" in letter["error_message"]
    assert h.esi.hits[nested["killmail_id"]] == 1


def test_an_unexpected_error_in_one_fetch_makes_that_record_alone_transient(
    make_harness, sample_killmails, capfd, caplog
):
    docs = sample_killmails[:4]
    broken = docs[1]
    h = make_harness(docs)
    esi = h.module.fetcher().esi
    fetch = esi.fetch

    def fetch_or_fail(killmail_id, killmail_hash, deadline):
        if killmail_id == broken["killmail_id"]:
            raise RuntimeError("nobody saw this coming")
        return fetch(killmail_id, killmail_hash, deadline)

    esi.fetch = fetch_or_fail
    records = [record(body(doc, inline=n % 2 == 0)) for n, doc in enumerate(docs)]
    output(capfd, caplog)

    assert failures(h.invoke(records)) == [records[1]["messageId"]]

    with h.connect() as conn:
        assert count_rows(conn, "killmails") == 3
        for doc in docs:
            if doc is not broken:
                assert_stored_as(conn, doc, zkb_for(doc))
    assert h.dead_letters() == []
    lines, totals = output(capfd, caplog)
    [failed] = [line for line in lines if line["outcome"] == "failed"]
    assert failed["killmail_id"] == broken["killmail_id"]
    assert failed["error_type"] == "unexpected_error"
    assert failed["reason"] == "RuntimeError: nobody saw this coming"
    assert (totals["KillmailsStored"], totals["TransientFailures"]) == (3, 1)


def test_a_stored_document_that_no_longer_validates_makes_that_record_alone_transient(
    make_harness, sample_killmails, capfd, caplog
):
    docs = sample_killmails[:3]
    stale, inline, fetched = docs
    h = make_harness(docs)
    store_directly(h.database_url, [stale])
    with h.connect() as conn, conn, conn.cursor() as cur:
        # Stands for a document stored before the validator refused what it holds.
        cur.execute(
            """UPDATE killmails SET esi = jsonb_set(esi, '{killmail_time}', '"yesterday"')
                       WHERE killmail_id = %s""",
            (stale["killmail_id"],),
        )
    records = [
        record(body(stale, inline=False)),
        record(body(inline, inline=True)),
        record(body(fetched, inline=False)),
    ]
    output(capfd, caplog)

    assert failures(h.invoke(records)) == [records[0]["messageId"]]

    with h.connect() as conn:
        assert count_rows(conn, "killmails") == 3
        assert_stored_as(conn, inline, zkb_for(inline))
        assert_stored_as(conn, fetched, zkb_for(fetched))
    assert h.esi.hits == Counter({fetched["killmail_id"]: 1})
    assert h.dead_letters() == []
    lines, _ = output(capfd, caplog)
    [failed] = [line for line in lines if line["outcome"] == "failed"]
    assert failed["killmail_id"] == stale["killmail_id"]
    assert failed["error_type"] == "stored_document_invalid"
    assert "killmail_time" in failed["reason"]


def test_a_database_secret_without_a_password_makes_the_batch_transient_and_still_dead_letters_the_bad(
    make_harness, sample_killmails, capfd, caplog
):
    doc = sample_killmails[0]
    arn = boto3.client("secretsmanager").create_secret(
        Name="killstream/db", SecretString=json.dumps({"username": "killstream"})
    )["ARN"]
    h = make_harness([doc], DB_SECRET_ARN=arn, DB_SSLMODE="disable")
    good, bad = record(body(doc, inline=True)), record("not json at all")
    output(capfd, caplog)

    assert failures(h.invoke([good, bad])) == [good["messageId"]]

    [letter] = h.dead_letters()
    assert (letter["body"], letter["error_type"]) == (bad["body"], "invalid_message")
    lines, _ = output(capfd, caplog)
    [failed] = [line for line in lines if line["killmail_id"] == doc["killmail_id"]]
    assert failed["error_type"] == "unexpected_error"
    assert failed["reason"] == "ConfigError: DB_SECRET_ARN: the secret lacks password"
    with h.connect() as conn:
        assert count_rows(conn, "killmails") == 0


# --- the database --------------------------------------------------------------------------


@needs_embedded_server
def test_the_database_stopping_mid_batch_makes_every_record_transient_and_the_retry_stores_them(
    make_harness, sample_killmails, postgres_server
):
    docs = sample_killmails[10:20]
    h = make_harness(docs)
    records = [record(body(doc, inline=n % 2 == 0)) for n, doc in enumerate(docs)]
    h.invoke([record(body(sample_killmails[30], inline=True))])  # the connection is made and kept

    def stop_database(response, *args, **kwargs):
        postgres_server.stop()

    session = h.module.fetcher().esi.session
    session.hooks["response"].append(stop_database)
    try:
        response = h.invoke(records)
    finally:
        session.hooks["response"].remove(stop_database)
        postgres_server.start()

    assert failures(response) == sorted(r["messageId"] for r in records)
    with h.connect() as conn:
        assert count_rows(conn, "killmails") == 1, "nothing of the failed batch may be written"
        assert count_rows(conn, "attackers") == len(sample_killmails[30]["attackers"])
    assert h.dead_letters() == []

    assert failures(h.invoke(records)) == []
    with h.connect() as conn:
        for doc in docs:
            assert_stored_as(conn, doc, zkb_for(doc))
        assert count_rows(conn, "killmails") == 11


@needs_embedded_server
def test_a_database_down_from_the_start_costs_no_esi_request(
    make_harness, sample_killmails, postgres_server, capfd, caplog
):
    docs = sample_killmails[:4]
    h = make_harness(docs)
    records = [record(body(doc, inline=False)) for doc in docs]
    output(capfd, caplog)
    postgres_server.stop()
    try:
        response = h.invoke(records)
    finally:
        postgres_server.start()
    assert failures(response) == sorted(r["messageId"] for r in records)
    assert h.esi.total_hits == 0
    lines, totals = output(capfd, caplog)
    assert {line["error_type"] for line in lines if line["outcome"] == "failed"} == {"database_unavailable"}
    assert totals["TransientFailures"] == 4


def test_a_record_the_database_refuses_is_dead_lettered_alone_and_the_rest_stored(make_harness, sample_killmails):
    docs = sample_killmails[:4]
    refused = docs[1]
    h = make_harness(docs)
    with h.connect() as conn, conn, conn.cursor() as cur:
        # Stands for any value a column cannot hold that validation let through (SQLSTATE class 22).
        cur.execute(
            """
            CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.killmail_id = %s THEN
                    RAISE EXCEPTION 'value out of range for this column' USING ERRCODE = '22003';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER refuse_one BEFORE INSERT ON killmails FOR EACH ROW EXECUTE FUNCTION refuse_one();
        """,
            (refused["killmail_id"],),
        )
    records = [record(body(doc, inline=n % 2 == 0)) for n, doc in enumerate(docs)]

    letter = only_one_dead_lettered(h, records, docs, refused)
    assert letter["error_type"] == "database_rejected"
    assert "out of range" in letter["error_message"]
    assert letter["killmail_id"] == str(refused["killmail_id"])


def test_a_body_whose_source_is_unknown_or_does_not_encode_is_dead_lettered_alone_with_its_reason(
    make_harness, sample_killmails
):
    """Defect 7: `"source": "\\ud800"` is valid JSON that decodes to a lone surrogate. It made the
    COPY fail, which the fetcher took for a lost connection: the whole batch went back, the good
    killmail was never stored, and the batch ended in the DLQ without reasons."""
    docs = sample_killmails[:3]
    h = make_harness(docs)
    surrogate = body(docs[1], inline=True).replace('"source":"r2z2"', '"source":"\\ud800"')
    unknown = body(docs[2], inline=True).replace('"source":"r2z2"', '"source":"carrier-pigeon"')
    assert '"\\ud800"' in surrogate and json.loads(surrogate)["source"] == "\ud800"
    records = [record(body(docs[0], inline=True)), record(surrogate), record(unknown)]
    assert failures(h.invoke(records)) == []
    with h.connect() as conn:
        assert count_rows(conn, "killmails") == 1
        assert_stored_as(conn, docs[0], zkb_for(docs[0]))
    letters = sorted(h.dead_letters(), key=lambda letter: letter["body"] != surrogate)
    assert [letter["error_type"] for letter in letters] == ["invalid_message"] * 2
    assert [letter["body"] for letter in letters] == [surrogate, unknown]
    assert "source" in letters[0]["error_message"] and "carrier-pigeon" in letters[1]["error_message"]


def test_a_record_that_fails_to_encode_in_the_write_is_split_out_and_the_rest_stored(database_url, sample_killmails):
    """Defect 7, the writer's half: whatever validation misses, a batch write that fails for a
    reason other than a lost connection is split until the bad record stands alone. psycopg2
    reports an encoding error in the COPY as an OperationalError (QueryCanceled) on a connection
    that is fine: it is neither an outage nor a reason to reconnect."""
    docs = sample_killmails[:5]
    records = [
        KillmailRecord(parse_killmail(split_hash(doc)[0]), doc["killmail_hash"], parse_zkb(zkb_for(doc)), "r2z2")
        for doc in docs
    ]
    records[3] = KillmailRecord(records[3].killmail, records[3].killmail_hash, records[3].zkb, "r2z2\ud800")
    database = Database(DatabaseConfig(database_url=database_url, secret_arn=None, sslmode=None, sslrootcert=None))
    kept = database.connection()
    results = write_records(database, records)
    assert results[:3] + results[4:] == [Outcome.INSERTED] * 4
    assert isinstance(results[3], PermanentError) and results[3].error_type == "database_rejected"
    assert "UnicodeEncodeError" in results[3].message
    assert database.connection() is kept  # never taken for a lost connection
    with closing(connect(database_url)) as conn:
        assert count_rows(conn, "killmails") == 4


# --- exactly once ------------------------------------------------------------------------------


def test_the_same_message_twice_and_the_same_killmail_under_two_sequences_are_stored_once(
    make_harness, sample_killmails
):
    first, second = sample_killmails[:2]
    h = make_harness([first, second])
    older_zkb = zkb_for(first)
    newer_zkb = older_zkb | {"totalValue": older_zkb["totalValue"] * 2, "points": 1}
    older = body(first, inline=True, sequence_id=100)
    newer = body(first, inline=True, sequence_id=101, zkb=newer_zkb)
    metadata_only = body(second, inline=False, sequence_id=102)
    batch = [record(older), record(older), record(newer), record(metadata_only), record(metadata_only)]

    assert failures(h.invoke(batch)) == []
    assert failures(h.invoke([record(older), record(metadata_only)])) == []  # redelivered later

    with h.connect() as conn:
        assert count_rows(conn, "killmails") == 2
        assert count_rows(conn, "attackers") == len(first["attackers"]) + len(second["attackers"])
        assert_stored_as(conn, first, newer_zkb)  # the later sequence wins, even redelivered out of order
        assert_stored_as(conn, second, zkb_for(second))
    assert h.esi.hits == Counter({second["killmail_id"]: 1})


def test_already_stored_killmails_cause_no_esi_request_and_still_take_new_zkb_values(
    make_harness, sample_killmails, capfd, caplog
):
    docs = sample_killmails[:5]
    h = make_harness(docs)
    store_directly(h.database_url, docs)
    revalued = zkb_for(docs[0]) | {"totalValue": 123456.78}
    records = [record(body(docs[0], inline=False, zkb=revalued))]
    records += [record(body(doc, inline=False)) for doc in docs[1:]]
    output(capfd, caplog)

    assert failures(h.invoke(records)) == []

    assert h.esi.total_hits == 0
    with h.connect() as conn:
        assert count_rows(conn, "killmails") == 5
        assert_zkb(conn, docs[0]["killmail_id"], revalued)
        assert_stored_as(conn, docs[1], zkb_for(docs[1]))
    lines, totals = output(capfd, caplog)
    assert sorted(line["outcome"] for line in lines) == ["skipped"] * 4 + ["updated"]
    assert (totals["ZkbUpdated"], totals["KillmailsDuplicate"], totals["EsiFetches"]) == (1, 4, 0)


# --- ESI's limits across the batch -------------------------------------------------------------


def test_an_error_limited_esi_is_not_called_again_and_the_rest_of_the_batch_is_transient(
    make_harness, sample_killmails
):
    docs = sample_killmails[:5]
    h = make_harness(docs, ESI_PARALLELISM="1")
    h.esi.fail(docs[0]["killmail_id"], 420, headers={"X-ESI-Error-Limit-Reset": "45"})
    records = [record(body(doc, inline=False)) for doc in docs[:4]] + [record(body(docs[4], inline=True))]

    response = h.invoke(records)

    assert failures(response) == sorted(r["messageId"] for r in records[:4])
    assert h.esi.total_hits == 1
    with h.connect() as conn:
        assert count_rows(conn, "killmails") == 1  # the one that needed no ESI
    assert h.dead_letters() == []


def test_fetches_run_in_parallel_up_to_esi_parallelism(make_harness, sample_killmails):
    docs = sample_killmails[:8]
    h = make_harness(docs, ESI_PARALLELISM="4", esi_options={"latency": 0.3})
    started = time.monotonic()
    assert failures(h.invoke([record(body(doc, inline=False)) for doc in docs])) == []
    elapsed = time.monotonic() - started
    # 8 fetches of 0.3 s, at most 4 at once: at least two rounds, however fast the machine. That
    # they overlap is counted at the server (requests begun while another was still answered),
    # which holds however slow the machine is.
    assert elapsed >= 0.6
    in_flight = max(
        sum(1 for other in h.esi.requests if other.started <= r.started < other.started + 0.3) for r in h.esi.requests
    )
    assert 2 <= in_flight <= 4


# --- the DLQ -----------------------------------------------------------------------------------


def test_a_permanent_failure_the_dlq_refuses_is_reported_failed_not_dropped(make_harness, sample_killmails):
    good = sample_killmails[0]
    h = make_harness([good], DLQ_URL="http://127.0.0.1:1/000000000000/no-such-queue")
    bad = record("not json at all")
    response = h.invoke([bad, record(body(good, inline=True))])
    assert failures(response) == [bad["messageId"]]
    with h.connect() as conn:
        assert_stored_as(conn, good)


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:No application metrics")
def test_configuration_is_read_on_the_first_invocation_and_a_bad_value_names_its_variable(make_harness, monkeypatch):
    h = make_harness([])
    monkeypatch.setenv("ESI_PARALLELISM", "lots")  # after import: the module must not have read it yet
    with pytest.raises(ValueError, match="ESI_PARALLELISM"):
        h.invoke([record("{}")])


def test_the_zkb_href_host_is_never_called(make_harness, sample_killmails):
    doc = sample_killmails[0]
    h = make_harness([doc])
    zkb = zkb_for(doc) | {"href": f"http://127.0.0.1:1/v1/killmails/{doc['killmail_id']}/{doc['killmail_hash']}/"}
    assert failures(h.invoke([record(body(doc, inline=False, zkb=zkb))])) == []
    assert h.esi.hits == Counter({doc["killmail_id"]: 1})


# --- done when: the 106 real killmails ---------------------------------------------------------


def test_the_real_killmails_half_inline_half_from_esi_are_stored_and_a_redelivery_changes_nothing(
    make_harness, real_killmails, capfd, caplog
):
    h = make_harness(real_killmails)
    batches = [
        [
            record(body(doc, inline=n % 2 == 0, sequence_id=1000 + n))
            for n, doc in enumerate(real_killmails[i : i + 10], start=i)
        ]
        for i in range(0, len(real_killmails), 10)
    ]
    output(capfd, caplog)

    started = time.monotonic()
    first_failures = [failures(h.invoke(batch)) for batch in batches]
    first_seconds = time.monotonic() - started
    first_hits = h.esi.total_hits
    _, first = output(capfd, caplog)

    with h.connect() as conn:
        assert count_rows(conn, "killmails") == len(real_killmails)
        for doc in real_killmails:
            assert_stored_as(conn, doc, zkb_for(doc))
        rows = {table: count_rows(conn, table) for table in ("killmails", "attackers", "items")}

    started = time.monotonic()
    second_failures = [failures(h.invoke(batch)) for batch in batches]
    second_seconds = time.monotonic() - started
    _, second = output(capfd, caplog)

    assert first_failures == second_failures == [[]] * len(batches)
    assert first_hits == len(real_killmails) // 2
    assert h.esi.total_hits == first_hits, "a redelivery must not reach ESI"
    assert first["KillmailsStored"] == len(real_killmails)
    assert second["KillmailsStored"] == 0
    assert second["KillmailsDuplicate"] == len(real_killmails)
    with h.connect() as conn:
        assert {table: count_rows(conn, table) for table in rows} == rows
    print(
        f"\nfirst delivery: {len(batches)} batches, stored {first['KillmailsStored']:.0f}, "
        f"ESI requests {first_hits}, {first_seconds:.2f} s; rows {rows}"
    )
    print(
        f"second delivery: stored {second['KillmailsStored']:.0f}, duplicates {second['KillmailsDuplicate']:.0f}, "
        f"ESI requests {h.esi.total_hits - first_hits}, {second_seconds:.2f} s"
    )
