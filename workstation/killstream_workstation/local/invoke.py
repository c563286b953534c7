"""`killstream invoke poller|fetcher`: what `sam local invoke -e` does, without Docker — the
same handler on the same event file, against local endpoints (moto, PostgreSQL, the local
R2Z2 and ESI). Prints the handler's JSON log lines, as Lambda would, and its response."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from killstream_workstation import corpus
from killstream_workstation.local.aws import LocalAws
from killstream_workstation.local.database import database_url, migrate_database, url_origin
from killstream_workstation.local.lambda_runtime import LambdaContext, load_handler_module
from killstream_workstation.problems import UsageProblem
from killstream_workstation.simulators.esi import EsiServer
from killstream_workstation.simulators.r2z2 import R2Z2Server

USER_AGENT = "killstream/0.1.0 (local invoke)"


def add_invoke_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("function", choices=["poller", "fetcher"])
    parser.add_argument(
        "--event",
        action="append",
        required=True,
        metavar="FILE",
        help="event JSON (repeatable for the fetcher: the records are joined into one batch)",
    )
    parser.add_argument("--budget", type=int, default=5, help="poller: tick budget in seconds (default 5)")
    parser.add_argument("--database-url", help="fetcher: default $DATABASE_URL, else the embedded server")


def _events(paths: list[str]) -> list[dict]:
    events = []
    for path in paths:
        try:
            events.append(json.loads(Path(path).read_text()))
        except OSError as error:
            raise UsageProblem(f"--event {path}: cannot be read ({error.strerror or error})") from error
        except ValueError as error:
            raise UsageProblem(f"--event {path}: not valid JSON ({error})") from error
    return events


def _invoke_poller(args, aws: LocalAws) -> dict:
    event = _events(args.event)[0]
    with R2Z2Server(sequence_lag=0) as r2z2:
        for doc in corpus.sample()[:5]:
            esi, killmail_hash = corpus.split_hash(doc)
            r2z2.publish(esi, killmail_hash, corpus.zkb_for(doc))
        aws.set_cursor("0")
        os.environ.update(
            {
                "R2Z2_URL": r2z2.url,
                "QUEUE_URL": aws.queue_url,
                "CURSOR_PARAMETER": aws.cursor_parameter,
                "POLL_BUDGET_SECONDS": str(args.budget),
                "USER_AGENT": USER_AGENT,
            }
        )
        response = load_handler_module("poller").handler(event, LambdaContext("killstream-poller", 60))
    print(f"\nqueue now holds {aws.queue_depth(aws.queue_url)} messages")
    return response


def _invoke_fetcher(args, aws: LocalAws) -> dict:
    records = [record for event in _events(args.event) for record in event["Records"]]
    url = database_url(args.database_url)
    migrate_database(url, url_origin(args.database_url))
    with EsiServer() as esi:
        # Serve every killmail the events name: inline ones as given, the others made from the
        # sample corpus under the event's id and hash.
        spare = iter(corpus.sample())
        for record in records:
            body = json.loads(record["body"])
            doc = body.get("esi") or dict(next(spare), killmail_id=body["killmail_id"])
            esi.add({k: v for k, v in doc.items() if k != "killmail_hash"}, body["hash"])
        os.environ.update(
            {
                "ESI_URL": esi.url,
                "DLQ_URL": aws.dlq_url,
                "EVENT_BUS_NAME": aws.event_bus_name,
                "DATABASE_URL": url,
                "USER_AGENT": USER_AGENT,
            }
        )
        response = load_handler_module("fetcher").handler({"Records": records}, LambdaContext("killstream-fetcher", 60))
        print(f"\nESI requests: {esi.total_hits}; DLQ holds {aws.queue_depth(aws.dlq_url)} messages")
    return response


def invoke(args: argparse.Namespace) -> int:
    aws = LocalAws(visibility_timeout=360).start()
    try:
        response = (_invoke_poller if args.function == "poller" else _invoke_fetcher)(args, aws)
    finally:
        aws.stop()
    print("response:", json.dumps(response, indent=2, default=str))
    return 0
