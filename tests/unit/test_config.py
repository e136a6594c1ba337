"""Config: defaults < file < environment, with unknown keys and bad types reported by line."""

from __future__ import annotations

from pathlib import Path

import pytest

from recovery.engine.config import load_config
from recovery.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_the_example_config_is_valid() -> None:
    config = load_config(ROOT / "config.example.yaml", env={})
    assert config.console.login_timeout == 60
    assert config.publish.http.bind == "127.0.0.1"


def test_the_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("journal:\n  dir: /from/file\n")
    assert load_config(path, env={}).journal.dir == Path("/from/file")
    assert load_config(path, env={"RECOVERY_JOURNAL_DIR": "/from/env"}).journal.dir == Path("/from/env")


def test_every_problem_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("console:\n  login_timeout: soon\n  colour: blue\nssh:\n  timeout: 5\nnope: 1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    message = str(caught.value)
    assert "c.yaml:2: console.login_timeout: expected a number, got 'soon'" in message
    assert "c.yaml:3: console.colour: unknown setting" in message
    assert "c.yaml:6: nope: unknown setting" in message


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("console:\n  login_timeout: [\n")
    with pytest.raises(ConfigError, match=r"c.yaml:3: not valid YAML"):
        load_config(path, env={})
