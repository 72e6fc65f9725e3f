"""Logging: one format for every line a paycore process writes, with the context of the
request or job that wrote it.

Modules keep standard-library loggers (``logging.getLogger(__name__)``) and %-style
messages; ``configure`` installs one handler on the root logger whose formatter is
structlog's ``ProcessorFormatter``, so that paycore's lines, uvicorn's and the
libraries' all come out in one format (``console``: aligned ``key=value``; ``json``: one
object per line for a log pipeline), each with what ``bind``/``bound`` put in the
current context: ``request_id`` (also the ``X-Request-Id`` answer header), ``tenant``,
``shard``, ``job``, ``payment``. The context lives in contextvars, so it follows a
request through its awaits and never leaks into another request's task.

Libraries that narrate every call (httpx, stamina's retries...) log at WARNING and above
unless the level asked for is ``debug``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any, Final

import structlog

__all__ = ["ACCESS_LOGGER", "FORMATS", "LEVELS", "bind", "bound", "configure", "unbind"]

FORMATS: Final = ("console", "json")
LEVELS: Final = ("debug", "info", "warning", "error", "critical")
# Quiet unless debugging: they log each request or retry at INFO.
NOISY_LIBRARIES: Final = ("httpx", "httpcore", "stamina", "asyncio", "hpack", "psycopg.pool")

_HANDLER_NAME: Final = "paycore"
# The line per HTTP request (``paycore.api.metrics``).
ACCESS_LOGGER: Final = "paycore.access"


def _level(name: str) -> int:
    # uvicorn's spelling "warn" and "trace" are accepted where its flags are passed on.
    key = {"warn": "warning", "trace": "debug"}.get(name.lower(), name.lower())
    if key not in LEVELS:
        raise ValueError(f"log level must be one of {LEVELS}, not {name!r}")
    return logging.getLevelName(key.upper())  # type: ignore[no-any-return]


def _drop_color_message(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    # uvicorn passes its message again with terminal colours as an extra.
    event.pop("color_message", None)
    return event


def configure(
    level: str = "info",
    fmt: str = "console",
    *,
    stream: IO[str] | None = None,
    access_log: bool = True,
) -> None:
    """Send every log record of this process to ``stream`` (stderr) as ``fmt``, at
    ``level`` and above; ``access_log``: the line per HTTP request too (logger
    ``paycore.access``). Calling it again replaces what an earlier call installed."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}, not {fmt!r}")
    threshold = _level(level)
    shared: Sequence[Any] = (
        structlog.stdlib.ExtraAdder(),  # ``extra={...}`` of a stdlib call: its fields
        _drop_color_message,
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    )
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False, pad_event_to=40)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *((structlog.processors.format_exc_info,) if fmt == "json" else ()),
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)
    quiet = threshold if threshold <= logging.DEBUG else max(threshold, logging.WARNING)
    for name in NOISY_LIBRARIES:
        logging.getLogger(name).setLevel(quiet)
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.NOTSET if access_log else logging.WARNING)
    # uvicorn's loggers send their lines here rather than through handlers of their own.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,  # before any work for a line not written
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def bind(**context: Any) -> None:
    """Add ``context`` to every line logged from here on in the current task."""
    structlog.contextvars.bind_contextvars(**context)


@contextmanager
def bound(**context: Any) -> Iterator[None]:
    """``context`` on every line logged inside the block (then as before)."""
    with structlog.contextvars.bound_contextvars(**context):
        yield


def unbind(*keys: str) -> None:
    """Remove ``keys`` from the current task's context."""
    structlog.contextvars.unbind_contextvars(*keys)
