"""The `killstream` command's entry point and its one error boundary (the parser and commands
are in commands.py).

A failure we know — a bad flag or setting, an unreadable replay folder, a database or AWS
endpoint out of reach, a busy local directory, Ctrl+C before the pipeline is up — is one line on
stderr naming what is wrong and what to do. Exit status: 0 done (also when the reader of the
output went away, `… | head`), 1 the environment (unreachable, busy, missing), 2 a bad input or
setting, 130 interrupted. Anything else is a bug: one line too, and `--debug` (or
KILLSTREAM_DEBUG=1) shows its traceback.

Only the standard library is imported at the top: Ctrl+C while boto3 and the rest load (a second
or two) is then caught here too."""

from __future__ import annotations

import os
import sys

INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("killstream: interrupted (Ctrl+C)", file=sys.stderr)
        return INTERRUPTED


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _main(argv: list[str] | None) -> int:
    import psycopg2
    from botocore.exceptions import BotoCoreError, ClientError

    from killstream.errors import ConfigError
    from killstream_workstation.cli.commands import build_parser
    from killstream_workstation.local.console import discard_stdout
    from killstream_workstation.problems import Problem

    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("KILLSTREAM_DEBUG", "").strip() not in ("", "0")
    name = f"killstream {args.command}"

    def fail(message: str, status: int) -> int:
        print(f"{name}: {message}", file=sys.stderr)
        return status

    try:
        status: int = args.func(args)
        sys.stdout.flush()
        return status
    except BrokenPipeError:  # the reader went away (`… | head`): nothing left to say, nothing failed
        discard_stdout()
        return 0
    except KeyboardInterrupt:
        if args.command != "run":
            return fail("interrupted (Ctrl+C)", INTERRUPTED)
        embedded = not (getattr(args, "database_url", None) or os.environ.get("DATABASE_URL", "").strip())
        left = "; the embedded PostgreSQL keeps running (make stop stops it)" if embedded else ""
        return fail(f"interrupted (Ctrl+C) before the pipeline was up: what had started is stopped{left}", INTERRUPTED)
    except Problem as problem:
        return fail(str(problem), problem.exit_code)
    except ConfigError as error:
        return fail(f"configuration error: {error}", 2)
    except (BotoCoreError, ClientError) as error:
        if debug:
            raise
        return fail(f"AWS: {_first_line(error)} (check AWS_REGION, credentials and AWS_ENDPOINT_URL)", 1)
    except psycopg2.Error as error:
        if debug:
            raise
        return fail(f"database error: {_first_line(error)}", 1)
    except Exception as error:
        if debug:
            raise
        return fail(
            f"unexpected error: {type(error).__name__}: {_first_line(error)} — a bug: run it again with --debug "
            "for the traceback, and report it",
            1,
        )


if __name__ == "__main__":
    sys.exit(main())
