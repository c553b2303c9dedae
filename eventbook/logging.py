"""structlog set-up: JSON lines for machines, readable lines on a terminal."""

from __future__ import annotations

import copy
import logging
import sys
from typing import Any, TextIO

import asyncpg
import structlog
from structlog.typing import EventDict


def configure(log_format: str = "auto", level: str = "info", stream: TextIO | None = None,
              process: int | None = None) -> None:
    """Route structlog and the standard library's logging through one renderer to `stream`.

    `stream` is stdout (the default) for the long-running processes; operator commands
    pass stderr, so that their stdout holds only their answer. `process`, the index of
    one of `serve --processes N`'s server processes, is a field of each of its lines:
    they share the parent's output.
    """
    out = sys.stdout if stream is None else stream
    if log_format == "auto":
        log_format = "console" if out.isatty() else "json"
    # A traceback lists its frames, never their local variables: a request's frames hold
    # its body, a password and its hash included. structlog's default for both renderers
    # (rich on the console, dict_tracebacks in JSON) shows them.
    renderer: structlog.typing.Processor
    tracebacks: list[structlog.typing.Processor]
    if log_format == "console":
        # The console renderer formats exc_info itself.
        renderer = structlog.dev.ConsoleRenderer(
            exception_formatter=structlog.dev.plain_traceback
        )
        tracebacks = [_without_row_values]
    else:
        renderer = structlog.processors.JSONRenderer()
        tracebacks = [
            _without_row_values,
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        ]

    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if process is not None:
        shared.append(_tagged(process))
    # Our own log lines are rendered and written by structlog directly: through the
    # standard library's logging they cost twice as much, and the booking path writes
    # two per request. Other libraries' lines still go through
    # logging, rendered the same way by the handler below.
    structlog.configure(
        processors=[*shared, *tracebacks, renderer],
        logger_factory=_NamedLoggerFactory(out),
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *tracebacks,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's own access log would duplicate ours.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _tagged(process: int) -> structlog.typing.Processor:
    def tag(_: Any, __: str, event_dict: EventDict) -> EventDict:
        event_dict["process"] = process
        return event_dict

    return tag


def _without_row_values(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """Log a database error without its DETAIL, which quotes the values of the row that
    failed ("Failing row contains (..., $argon2id$...)", "Key (email)=(...) exists")."""
    exc_info = event_dict.get("exc_info")
    if not exc_info:
        return event_dict
    if exc_info is True:
        exc_info = sys.exc_info()
    exc = exc_info if isinstance(exc_info, BaseException) else exc_info[1]
    if exc is not None:
        clean = _redacted(exc, set())
        if clean is not exc:
            event_dict["exc_info"] = (type(clean), clean, clean.__traceback__)
    return event_dict


def _redacted(exc: BaseException, seen: set[int]) -> BaseException:
    """`exc` itself, or a copy of it and of the exceptions it chains to, with no asyncpg
    error keeping a detail."""
    seen.add(id(exc))
    cause, context = exc.__cause__, exc.__context__
    clean_cause = cause if cause is None or id(cause) in seen else _redacted(cause, seen)
    clean_context = (
        context if context is None or id(context) in seen else _redacted(context, seen)
    )
    detailed = isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError) and bool(
        getattr(exc, "detail", None)
    )
    if not detailed and clean_cause is cause and clean_context is context:
        return exc
    clean = copy.copy(exc)
    if detailed:
        clean.detail = None  # type: ignore[attr-defined]
    clean.__cause__ = clean_cause
    clean.__context__ = clean_context
    clean.__suppress_context__ = exc.__suppress_context__
    return clean.with_traceback(exc.__traceback__)


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
