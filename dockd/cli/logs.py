"""structlog set-up: JSON lines when stdout is not a terminal, readable console output when it is.

Every log line about a clip is bound with ``clip`` (its id) and ``camera``
(its serial) by the module that logs it.
"""

from __future__ import annotations

import io
import logging
import sys

import structlog
from structlog.typing import EventDict, WrappedLogger

from dockd.core.textsafe import printable


def _unchanged(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    return event_dict


def _printable_strings(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Console logs go to a technician's terminal: camera names in them must not be able to drive it.

    Only top-level strings need it: the console renderer shows other values with ``repr``, which
    already escapes control characters. (JSON lines escape them anyway.)
    """
    return {k: printable(v) if isinstance(v, str) else v for k, v in event_dict.items()}


def _printable_traceback(sio, exc_info) -> None:
    """structlog's plain traceback, each line shown by the same rule (exception messages quote names)."""
    buf = io.StringIO()
    structlog.dev.plain_traceback(buf, exc_info)
    sio.write("\n".join(printable(line) for line in buf.getvalue().split("\n")))


def configure(level: str = "info", *, stream=None, force_json: bool | None = None) -> None:
    stream = stream or sys.stderr
    as_json = (not sys.stdout.isatty()) if force_json is None else force_json
    renderer = (structlog.processors.JSONRenderer(sort_keys=False) if as_json
                else structlog.dev.ConsoleRenderer(colors=stream.isatty(),
                                                   exception_formatter=_printable_traceback))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info if as_json else _unchanged,
            _unchanged if as_json else _printable_strings,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
