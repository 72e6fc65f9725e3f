"""One log format for the whole process, with the request's or job's context bound."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from paycore import logs

Configure = Callable[..., io.StringIO]


@pytest.fixture
def configure() -> Iterator[Configure]:
    """``logs.configure`` into a buffer; the process's logging is restored afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    libraries = {n: logging.getLogger(n).level for n in (*logs.NOISY_LIBRARIES, "uvicorn")}

    def run(level: str = "info", fmt: str = "json") -> io.StringIO:
        buffer = io.StringIO()
        logs.configure(level, fmt, stream=buffer)
        return buffer

    yield run
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, level in libraries.items():
        logging.getLogger(name).setLevel(level)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line]


def test_a_stdlib_line_carries_the_bound_context_as_json(configure: Configure) -> None:
    """A module's %-style line comes out as one JSON object with the context of the
    block it was logged in, and without it after the block."""
    buffer = configure(fmt="json")
    log = logging.getLogger("paycore.somewhere")
    with logs.bound(request_id="req_1", tenant="acme"):
        log.info("moved %d cents", 250)
    log.info("outside")
    inside, outside = lines(buffer)
    assert inside["event"] == "moved 250 cents"
    assert inside["request_id"] == "req_1"
    assert inside["tenant"] == "acme"
    assert inside["level"] == "info"
    assert inside["logger"] == "paycore.somewhere"
    assert inside["timestamp"].endswith("Z")
    assert "request_id" not in outside


def test_extra_fields_and_exceptions_are_kept(configure: Configure) -> None:
    """``extra={...}`` fields become keys; a traceback is one field, not many lines."""
    buffer = configure(fmt="json")
    log = logging.getLogger("paycore.x")
    log.info("request", extra={"status": 201, "duration_ms": 1.5})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    request, failed = lines(buffer)
    assert (request["status"], request["duration_ms"]) == (201, 1.5)
    assert "RuntimeError: boom" in failed["exception"]


def test_console_lines_are_key_value(configure: Configure) -> None:
    """The console format writes the message, then the context as key=value."""
    buffer = configure(fmt="console")
    with logs.bound(shard="s1", job="relay"):
        logging.getLogger("paycore.y").warning("slow step")
    line = buffer.getvalue().strip()
    assert "slow step" in line
    assert "shard=s1" in line
    assert "job=relay" in line
    assert "[warning" in line


def test_the_level_filters_and_noisy_libraries_stay_quiet(configure: Configure) -> None:
    """At info, paycore's info lines pass and httpx's do not; at debug, both do."""
    buffer = configure(level="info")
    logging.getLogger("paycore.z").info("kept")
    logging.getLogger("paycore.z").debug("dropped")
    logging.getLogger("httpx").info("HTTP Request: GET ...")
    assert [line["event"] for line in lines(buffer)] == ["kept"]
    buffer = configure(level="debug")
    logging.getLogger("httpx").info("HTTP Request: GET ...")
    assert [line["event"] for line in lines(buffer)] == ["HTTP Request: GET ..."]


def test_configuring_again_replaces_the_handler(configure: Configure) -> None:
    """A second call does not double every line."""
    configure()
    buffer = configure()
    logging.getLogger("paycore.w").warning("once")
    assert len(lines(buffer)) == 1


@pytest.mark.parametrize(("level", "fmt"), [("loud", "json"), ("info", "xml")])
def test_a_bad_level_or_format_is_refused(configure: Configure, level: str, fmt: str) -> None:
    """An unknown level or format is an error at start-up, not a silent default."""
    with pytest.raises(ValueError, match=r"log (level|format) must be one of"):
        logs.configure(level, fmt, stream=io.StringIO())
