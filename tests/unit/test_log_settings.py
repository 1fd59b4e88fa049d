"""router.log_level, log_format and log_file: read from the catalogue, the command line wins."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from router.catalogue.config import RouterSettings
from router.catalogue.parse import parse_config
from router.cli import parse_args
from router.logformat import log_as, setup_logging


@pytest.fixture
def root() -> Iterator[logging.Logger]:
    """The root logger as the test found it, once the test is done."""
    logger = logging.getLogger()
    level = logger.level
    yield logger
    setup_logging(logging.getLevelName(level).lower())  # drops the handler the test added
    logger.setLevel(level)


def our_handlers(logger: logging.Logger) -> list[logging.Handler]:
    return [h for h in logger.handlers if getattr(h, "_llama_router", False)]


def test_the_catalogues_log_settings_apply_where_the_command_line_is_silent(tmp_path, root):
    settings = RouterSettings(log_level="debug", log_format="json", log_file=str(tmp_path / "router.log"))
    args = parse_args(["--config", str(tmp_path / "c.yaml")])
    assert log_as(args.log_level, args.log_format, args.log_file, settings)
    assert root.level == logging.DEBUG
    [handler] = our_handlers(root)
    assert isinstance(handler, logging.FileHandler)
    logging.getLogger("router.test").debug("written to the file")
    handler.flush()
    line = json.loads((tmp_path / "router.log").read_text().splitlines()[-1])
    assert (line["level"], line["logger"], line["message"]) == ("debug", "router.test", "written to the file")


def test_the_command_line_wins_over_the_catalogue(tmp_path, root):
    settings = RouterSettings(log_level="debug", log_format="json", log_file=str(tmp_path / "file.log"))
    args = parse_args(["--log-level", "error", "--log-format", "text", "--log-file", str(tmp_path / "cli.log")])
    assert log_as(args.log_level, args.log_format, args.log_file, settings)
    assert root.level == logging.ERROR
    [handler] = our_handlers(root)
    assert Path(handler.baseFilename) == tmp_path / "cli.log"  # type: ignore[attr-defined]
    logging.getLogger("router.test").error("in text")
    handler.flush()
    assert "ERROR   router.test: in text" in (tmp_path / "cli.log").read_text()
    assert not (tmp_path / "file.log").exists()


def test_a_log_file_that_cannot_be_opened_is_a_configuration_error(tmp_path, root, capsys):
    settings = RouterSettings(log_file=str(tmp_path / "no-such-folder" / "router.log"))
    assert not log_as(None, None, None, settings)
    assert "router.log_file: cannot open it: No such file or directory" in capsys.readouterr().err


def test_a_relative_log_file_is_read_from_the_catalogues_folder(tmp_path):
    config = parse_config({"router": {"log_file": "logs/router.log"}}, str(tmp_path / "config.yaml"))
    assert config.router.log_file == str(tmp_path / "logs" / "router.log")
