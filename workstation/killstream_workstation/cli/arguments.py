"""What several commands share: day and count arguments, and the log shown as `killstream run`
shows it for the length of one command."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

from killstream.observability import logger
from killstream_workstation.local.console import RunStats, install


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a YYYY-MM-DD day: {text!r}") from None


@contextmanager
def console_logging(*, verbose: bool) -> Iterator[None]:
    """The log as `killstream run` shows it, for this command only (the handler is put back);
    without `verbose`, only warnings and errors."""
    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)  # Powertools logs to a stream
    formatter, filters, stream = handler.formatter, list(handler.filters), handler.stream
    install(logger, RunStats(), verbose=verbose)
    if not verbose:  # the command's own output says what the info lines would; problems still show
        handler.addFilter(lambda record: record.levelno >= logging.WARNING)
    try:
        yield
    finally:
        handler.setFormatter(formatter)
        handler.filters[:] = filters
        handler.setStream(stream)
