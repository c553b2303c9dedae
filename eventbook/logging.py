"""structlog set-up: JSON lines for machines, readable lines on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog


def configure(log_format: str = "auto", level: str = "info", stream: TextIO | None = None
              ) -> None:
    """Route structlog and the standard library's logging through one renderer to
    `stream` (stdout unless given)."""
    stream = stream or sys.stdout
    if log_format == "auto":
        log_format = "console" if stream.isatty() else "json"
    renderer: structlog.typing.Processor
    if log_format == "console":
        renderer = structlog.dev.ConsoleRenderer()
    else:
        renderer = structlog.processors.JSONRenderer()

    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    tracebacks = (
        structlog.processors.dict_tracebacks
        if log_format == "json"
        else structlog.processors.format_exc_info
    )
    # Our own log lines are rendered and written by structlog directly: through the
    # standard library's logging they cost twice as much, and the booking path writes
    # two per request (issue 7's profile). Other libraries' lines still go through
    # logging, rendered the same way by the handler below.
    structlog.configure(
        processors=[*shared, tracebacks, renderer],
        logger_factory=_NamedLoggerFactory(stream),
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            tracebacks,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's own access log would duplicate ours.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class _NamedLogger(structlog.WriteLogger):
    """structlog's file logger with the name add_logger_name reports."""

    def __init__(self, name: str, stream: TextIO) -> None:
        super().__init__(stream)
        self.name = name


class _NamedLoggerFactory:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, *args: object) -> _NamedLogger:
        return _NamedLogger(str(args[0]) if args else "", self.stream)
