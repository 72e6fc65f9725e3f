"""A pytest plugin: ``log_lines``, ``paycore.logs`` configured into a buffer for a test
(JSON lines), then restored; ``parsed`` reads it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from paycore import logs

__all__ = ["log_lines", "parsed"]


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Every line the process logs during the test, as JSON, in this buffer."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    libraries = {n: logging.getLogger(n).level for n in (*logs.NOISY_LIBRARIES, "uvicorn")}
    buffer = io.StringIO()
    logs.configure("info", "json", stream=buffer)
    yield buffer
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, level in libraries.items():
        logging.getLogger(name).setLevel(level)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def parsed(buffer: io.StringIO, logger: str | None = None) -> list[dict[str, Any]]:
    """The buffer's lines (of ``logger`` only, when given)."""
    lines = [json.loads(line) for line in buffer.getvalue().splitlines() if line]
    return [line for line in lines if logger is None or line.get("logger") == logger]
