"""Log lines: `extra=` fields rendered in text and JSON, `[log]` honoured by the daemon."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from node.cli.main import _configure_logging, build_parser, main
from node.logs import JsonFormatter, TextFormatter, configure


def _record(**extra: object) -> logging.LogRecord:
    logger = logging.getLogger("node.test")
    return logger.makeRecord(
        "node.test", logging.INFO, __file__, 1, "experiment done", (), None, extra=extra
    )


def test_text_lines_carry_the_fields_after_the_message() -> None:
    line = TextFormatter().format(_record(experiment="exp-1", seconds=2.5, note="two words"))
    assert line.endswith(
        'INFO node.test: experiment done experiment=exp-1 seconds=2.5 note="two words"'
    )
    assert line[:4].isdigit()  # a timestamp leads
    assert TextFormatter().format(_record()).endswith("node.test: experiment done")


def test_json_lines_are_one_object_with_every_field() -> None:
    entry = json.loads(JsonFormatter().format(_record(experiment="exp-1", sizes=[1, 2])))
    assert entry["message"] == "experiment done" and entry["level"] == "INFO"
    assert entry["experiment"] == "exp-1" and entry["sizes"] == [1, 2]
    assert entry["time"].endswith("+00:00")


def test_a_traceback_stays_below_the_fields() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info(), extra={"k": 1}
        )
    first, *rest = TextFormatter().format(record).splitlines()
    assert first.endswith("failed k=1")
    assert rest[-1] == "ValueError: boom"


def test_the_daemon_logs_at_the_homes_level_and_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    assert main(["--home", str(home), "init"]) == 0
    config = home / "config.toml"
    text = config.read_text().replace('level = "INFO"', 'level = "ERROR"')
    config.write_text(text.replace('format = "text"', 'format = "json"'))
    parser = build_parser()
    _configure_logging(parser.parse_args(["--home", str(home), "daemon"]))
    root = logging.getLogger()
    assert root.level == logging.ERROR
    ours = [h for h in root.handlers if isinstance(h.formatter, JsonFormatter | TextFormatter)]
    assert len(ours) == 1 and isinstance(ours[0].formatter, JsonFormatter)
    _configure_logging(parser.parse_args(["--home", str(home), "-v", "serve"]))
    assert root.level == logging.DEBUG
    # Other commands log warnings, whatever the home says, and never read it.
    config.write_text("[log]\nlevel = 'LOUD'\n")
    _configure_logging(parser.parse_args(["--home", str(home), "schema"]))
    assert root.level == logging.WARNING
    assert main(["--home", str(home), "daemon"]) == 2
    assert "log.level" in capsys.readouterr().err
    configure("WARNING")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("asi-node ")
