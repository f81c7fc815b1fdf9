"""xgbops.logs: one format and level for structlog events and standard-library records."""

from __future__ import annotations

import json
import logging
import pickle
import sys
import warnings
from collections.abc import Iterator

import pytest
import structlog

from tests.test_imports import imports_of
from xgbops.logs import SERVER_ACCESS_LOGGERS, SERVER_LOGGERS, configure_logging, logging_config


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Leave the standard library's logging as the test found it."""
    names = ["", *SERVER_LOGGERS, *SERVER_ACCESS_LOGGERS, "mlflow", "test"]
    loggers = [logging.getLogger(name) for name in names]
    saved = [(logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    yield
    logging.captureWarnings(False)
    structlog.contextvars.clear_contextvars()
    for logger, (handlers, level, propagate) in zip(loggers, saved):
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line]


def test_json_lines_from_structlog_and_the_standard_library(make_settings, capsys):
    configure_logging(make_settings(log_format="json"))
    structlog.contextvars.bind_contextvars(request_id="abc")
    structlog.get_logger().info("model.loaded", version="3")
    logging.getLogger("gunicorn.error").info("Booting worker with pid: %s", 42)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("stray", UserWarning, stacklevel=1)

    native, foreign, warning = (json.loads(line) for line in _lines(capsys))
    assert native["event"] == "model.loaded" and native["version"] == "3"
    assert native["level"] == "info" and native["request_id"] == "abc" and "timestamp" in native
    assert foreign["event"] == "Booting worker with pid: 42"
    assert foreign["logger"] == "gunicorn.error" and foreign["level"] == "info"
    assert foreign["request_id"] == "abc" and "timestamp" in foreign
    assert warning["logger"] == "py.warnings" and "stray" in warning["event"]


def test_exceptions_are_one_json_line(make_settings, capsys):
    configure_logging(make_settings(log_format="json"))
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        structlog.get_logger().exception("native.failed")
        logging.getLogger("test").exception("foreign.failed")
    native, foreign = (json.loads(line) for line in _lines(capsys))
    for line in (native, foreign):
        assert line["level"] == "error" and "RuntimeError: boom" in line["exception"]


def test_the_level_applies_to_both_kinds_of_line(make_settings, capsys):
    configure_logging(make_settings(log_format="json", log_level="WARNING"))
    structlog.get_logger().info("hidden")
    logging.getLogger("uvicorn.error").info("hidden too")
    structlog.get_logger().warning("shown")
    logging.getLogger("uvicorn.error").warning("shown too")
    assert [json.loads(line)["event"] for line in _lines(capsys)] == ["shown", "shown too"]


def test_noisy_libraries_log_warnings_only(make_settings):
    configure_logging(make_settings(log_level="DEBUG"))
    assert logging.getLogger("mlflow").getEffectiveLevel() == logging.WARNING
    configure_logging(make_settings(log_level="ERROR"))
    assert logging.getLogger("mlflow").getEffectiveLevel() == logging.ERROR


def test_console_format_is_not_json(make_settings, capsys):
    configure_logging(make_settings(log_format="console"))
    structlog.get_logger().info("model.loaded", version="3")
    logging.getLogger("gunicorn.error").info("Booting worker")
    lines = _lines(capsys)
    assert len(lines) == 2 and "model.loaded" in lines[0] and "version" in lines[0]
    assert "Booting worker" in lines[1] and not lines[1].startswith("{")


def test_auto_is_json_when_stderr_is_not_a_terminal(make_settings, capsys):
    configure_logging(make_settings(log_format="auto"))
    structlog.get_logger().info("model.loaded")
    assert json.loads(_lines(capsys)[0])["event"] == "model.loaded"


def test_the_servers_loggers_propagate_to_the_one_handler(make_settings):
    config = logging_config(make_settings(log_level="WARNING"))
    assert config["root"] == {"level": logging.WARNING, "handlers": ["stderr"]}
    for name in SERVER_LOGGERS:
        assert config["loggers"][name] == {
            "level": logging.WARNING,
            "handlers": [],
            "propagate": True,
        }


def test_the_servers_access_logs_stay_off(make_settings):
    configure_logging(make_settings())
    for name in SERVER_ACCESS_LOGGERS:  # uvicorn skips its access log when this is False
        assert not logging.getLogger(name).hasHandlers()


def test_the_logging_config_survives_pickling(make_settings):
    # uvicorn hands its config, log_config included, to worker processes it spawns.
    for log_format in ("json", "console"):
        config = logging_config(make_settings(log_format=log_format))
        assert pickle.loads(pickle.dumps(config))["version"] == 1


def test_imports_only_structlog_the_standard_library_and_config():
    # The lean serving image has neither pandas nor mlflow nor rich.
    allowed = set(sys.stdlib_module_names) | {"structlog", "__future__"}
    imported = imports_of("logs") - {"xgbops.config"}
    assert {name for name in imported if name.split(".")[0] not in allowed} == set()
