"""Where the factory's log lines go. Each module logs to its own
`logging.getLogger(__name__)`; only entry points (the CLI, a Ray worker)
attach handlers, to the `factory` logger they all share."""

from __future__ import annotations

import contextlib
import logging
import sys

ROOT = "factory"


def _attach(handler: logging.Handler) -> None:
    logger = logging.getLogger(ROOT)
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def log_to_stdout(prefix: str = "") -> None:
    """Plain lines on stdout (a Ray worker's, which Ray shows on the driver)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(prefix.replace("%", "%%") + "%(message)s"))
    _attach(handler)


def log_to(write) -> None:
    """Each record's message to `write` (the CLI's console)."""

    class _Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                write(record.getMessage())
            except Exception:  # noqa: BLE001 - logging must never break the run
                self.handleError(record)

    _attach(_Handler())


@contextlib.contextmanager
def quiet():
    """No info lines while a benchmark drives the pipeline."""
    logger = logging.getLogger(ROOT)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
