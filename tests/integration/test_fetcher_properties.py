"""A killmail the validator lets through, however mutated, is stored as rows equal to its
document: a value the validator accepts but a column cannot hold is a validator bug."""

from __future__ import annotations

import json
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from killstream.config import DatabaseConfig
from killstream.errors import PermanentError
from killstream.fetcher.batch import write_records
from killstream.storage.connection import Database
from killstream.storage.writer import KillmailRecord
from killstream_workstation.corpus import split_hash, zkb_for
from tests.support.messages import SOURCES, body_of, mutated, parse_or_error, without_nulls
from tests.support.stored import assert_zkb, normalize_esi, rebuild_esi


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.sampled_from(SOURCES).flatmap(lambda doc: st.tuples(st.just(doc), mutated(doc))))
def test_a_mutated_killmail_is_rejected_with_a_typed_error_or_stored_exactly(database_url, conn, source):
    original, doc = source
    killmail_id = original["killmail_id"]
    zkb = zkb_for(original)
    parsed = parse_or_error(body_of(doc, zkb, killmail_id=killmail_id))
    if parsed is None:
        return
    assert parsed.killmail.killmail_id == killmail_id
    with conn:
        with conn.cursor() as cur:
            cur.execute("DELETE FROM killmails WHERE killmail_id = %s", (killmail_id,))
    database = Database(DatabaseConfig(database_url, None, None, None))
    [result] = write_records(database, [KillmailRecord(parsed.killmail, parsed.package.hash, parsed.zkb, "r2z2")])
    database.close()
    # A value the validator lets through but a column cannot hold is a validator bug: at
    # run time it costs a DLQ entry where the message should have been refused up front.
    assert not isinstance(result, PermanentError), f"validated, yet PostgreSQL refused it: {result.message}"
    rebuilt = rebuild_esi(conn, killmail_id)
    rebuilt.pop("_esi")
    assert rebuilt.pop("_attacker_count") == len(doc["attackers"])
    assert rebuilt == normalize_esi(without_nulls(doc))
    assert stored_document(conn, killmail_id) == as_json_numbers(split_hash(doc)[0] if "killmail_hash" in doc else doc)
    assert_zkb(conn, killmail_id, zkb)


def as_json_numbers(value):
    """A JSON document with its numbers as exact decimals: jsonb writes 1e308 as 1 and 308
    zeros, the same JSON number, which Python would read back as an int unequal to the float."""
    return json.loads(value if isinstance(value, str) else json.dumps(value), parse_float=Decimal, parse_int=Decimal)


def stored_document(conn, killmail_id: int):
    with conn.cursor() as cur:
        cur.execute("SELECT esi::text FROM killmails WHERE killmail_id = %s", (killmail_id,))
        return as_json_numbers(cur.fetchone()[0])
