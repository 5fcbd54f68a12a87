"""``qbox -v``: each HTTP request the CLI makes, one line on stderr (httpx's own request log)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from qbox.cli.environment import Environment

HTTPX_LOGGER = "httpx"


class _ErrHandler(logging.Handler):
    def __init__(self, env: Environment) -> None:
        super().__init__(logging.INFO)
        self.env = env

    def emit(self, record: logging.LogRecord) -> None:
        self.env.err(f"* {record.getMessage()}")


@contextmanager
def log_requests(env: Environment) -> Iterator[None]:
    """While the command runs: httpx's "HTTP Request: GET … "HTTP/1.1 200 OK"" lines (never headers,
    so never the API key)."""
    logger = logging.getLogger(HTTPX_LOGGER)
    handler = _ErrHandler(env)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
