"""Logging of every xgbops process: structlog events and standard-library records, one format.

``configure_logging(settings)`` is the one setup, called explicitly by each entry point: the CLI,
gunicorn's logger class (``api/gunicorn_conf.py``), the uvicorn entry point and the app factories
when they build their own service (a worker process). Lines go to stderr: JSON lines when
``log_format`` is ``json`` (or ``auto`` and stderr is not a terminal), pretty ones otherwise, at
``log_level``. Records of the standard library (gunicorn, uvicorn, Flask, libraries) go through
structlog's ``ProcessorFormatter``, so a container prints nothing but JSON lines; values bound with
``structlog.contextvars`` (the API binds ``request_id``) appear in both kinds of line.

Imports only structlog, the standard library and ``xgbops.config``: the lean serving image uses it.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import Any, TextIO

import structlog

from xgbops.config import Settings

#: The servers' own loggers: they lose their handlers and propagate to ours.
SERVER_LOGGERS = ("gunicorn.error", "uvicorn", "uvicorn.error")
#: The servers' access logs: off (no handler, no propagation; uvicorn then skips them entirely),
#: since the apps write one line per request themselves (``serve.access_log``).
SERVER_ACCESS_LOGGERS = ("gunicorn.access", "uvicorn.access")
#: Libraries that chat at INFO: WARNING and above only, whatever ``log_level`` says.
NOISY_LOGGERS = ("mlflow", "alembic", "urllib3")


def configure_logging(settings: Settings) -> None:
    """Route structlog and standard-library logging to stderr in the format and level of settings.

    Safe to call again (each entry point of a process may): the last call wins.

    Args:
        settings: ``log_format`` (``auto``, ``console``, ``json``) and ``log_level`` are read.
    """
    structlog.configure(
        processors=[*_shared_processors(), *_render(settings)],
        wrapper_class=structlog.make_filtering_bound_logger(_level(settings)),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    logging.config.dictConfig(logging_config(settings))
    # Warnings become log lines, not stray text. Off first: captureWarnings(True) does nothing
    # when an earlier call captured them, even if something replaced the hook since.
    logging.captureWarnings(False)
    logging.captureWarnings(True)


def logging_config(settings: Settings) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` routing every standard-library record through structlog.

    uvicorn takes it as ``log_config``; ``configure_logging`` applies it.

    Args:
        settings: read as in ``configure_logging``.

    Returns:
        A dictConfig: one stderr handler on the root logger, formatted by structlog's
        ``ProcessorFormatter``; the servers' loggers propagate to it, their access logs are off.
    """
    level = _level(settings)
    formatter = {
        "()": structlog.stdlib.ProcessorFormatter,
        "foreign_pre_chain": [*_shared_processors(), structlog.stdlib.add_logger_name],
        "processors": [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *_render(settings),
        ],
    }
    loggers: dict[str, Any] = {
        name: {"level": level, "handlers": [], "propagate": True} for name in SERVER_LOGGERS
    }
    loggers.update({name: {"handlers": [], "propagate": False} for name in SERVER_ACCESS_LOGGERS})
    loggers.update({name: {"level": max(level, logging.WARNING)} for name in NOISY_LOGGERS})
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structlog": formatter},
        "handlers": {"stderr": {"()": _StderrHandler, "formatter": "structlog"}},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": loggers,
    }


def json_lines(settings: Settings) -> bool:
    """Whether this process logs JSON lines (``auto``: when stderr is not a terminal)."""
    return settings.log_format == "json" or (
        settings.log_format == "auto" and not sys.stderr.isatty()
    )


def _level(settings: Settings) -> int:
    return logging.getLevelNamesMapping()[settings.log_level]


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"),
    ]


def _render(settings: Settings) -> list[Any]:
    if json_lines(settings):
        return [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    return [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]


class _StderrLogger:
    """structlog's output: one write per line to whatever ``sys.stderr`` is at the time.

    One ``write`` call per line keeps lines whole next to the standard library's handler
    (``print`` writes the line and its newline separately).
    """

    def msg(self, message: str) -> None:
        """Write one rendered line."""
        stream = sys.stderr
        stream.write(message + "\n")
        stream.flush()

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


_STDERR_LOGGER = _StderrLogger()


def _stderr_logger(*_: Any) -> _StderrLogger:
    return _STDERR_LOGGER


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler on whatever ``sys.stderr`` is when a record comes (tests replace it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        """The current ``sys.stderr``."""
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        """Ignored: the stream is always the current ``sys.stderr``."""
