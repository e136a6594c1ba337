"""The Python API: `recovery.run` returns a report, prints nothing, and stops on a CancelToken."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import recovery
from recovery.engine.config import Config, JournalConfig
from tests.unit.fake_steps import CALLS, TWO_STEPS


def book(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "book.yaml"
    path.write_text(text)
    return path


def config(tmp_path: Path) -> Config:
    return Config(journal=JournalConfig(dir=tmp_path / "runs"))


def test_run_returns_the_report_and_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = recovery.run(book(tmp_path, TWO_STEPS), config=config(tmp_path))
    assert report.status == "succeeded"
    assert [step.id for step in report.timeline] == ["first", "second"]
    assert Path(report.journal) == tmp_path / "runs" / report.run_id
    assert capsys.readouterr() == ("", "")


def test_a_cancelled_token_stops_the_run_at_the_next_step_and_cleans_up(tmp_path: Path) -> None:
    token = recovery.CancelToken()

    def progress(line: str) -> None:
        if "succeeded first" in line:  # another thread would do this; the effect is the same
            token.cancel("stopped by the application")

    report = recovery.run(book(tmp_path, TWO_STEPS), config=config(tmp_path), cancel=token, progress=progress)
    assert report.status == "interrupted"
    assert report.error == "interrupted (stopped by the application)"
    assert CALLS == ["first:one", "undo:first"]  # second never started; first was undone


def test_ctrl_c_reaches_the_caller_with_the_report(tmp_path: Path) -> None:
    text = TWO_STEPS + "  - id: third\n    uses: test.interrupt\n"
    with pytest.raises(recovery.RunInterrupted) as caught:
        recovery.run(book(tmp_path, text), config=config(tmp_path))
    assert isinstance(caught.value, KeyboardInterrupt)
    assert caught.value.report.status == "interrupted"
    assert "undo:first" in CALLS


def test_a_run_refused_by_the_preflight_leaves_no_run_behind(tmp_path: Path) -> None:
    text = """
steps:
  - id: skipped
    uses: test.record
    when: "{{ false }}"
  - id: use
    uses: test.record
    with: {message: "prefix {{ steps.skipped.outputs.message }}"}
"""
    with pytest.raises(recovery.PreflightError):
        recovery.run(book(tmp_path, text), config=config(tmp_path))
    assert list((tmp_path / "runs").iterdir()) == []


def test_a_bug_is_an_internal_error_naming_its_traceback(tmp_path: Path) -> None:
    with pytest.raises(recovery.InternalError, match="ZeroDivisionError") as caught:
        recovery.run(book(tmp_path, "steps:\n  - id: boom\n    uses: test.crash\n"), config=config(tmp_path))
    debug_logs = list((tmp_path / "runs").glob("*/debug.log"))
    assert len(debug_logs) == 1
    assert str(debug_logs[0]) in str(caught.value)


def test_typed_inputs_and_plain_secrets_are_accepted(tmp_path: Path) -> None:
    text = """
inputs:
  port: {type: integer}
  verbose: {type: boolean, default: false}
secrets:
  token: {required: true}
steps:
  - id: show
    uses: test.record
    with: {message: "{{ inputs.port }} {{ inputs.verbose }} {{ secrets.token }}"}
"""
    report = recovery.run(book(tmp_path, text), {"port": 2222, "verbose": True}, {"token": "s3cr3t-token"},
                          config=config(tmp_path))
    assert report.status == "succeeded"
    assert CALLS[0] == "show:2222 true ***"  # the message became a Secret: it holds one


def test_a_missing_secret_is_a_usage_error_before_anything_runs(tmp_path: Path) -> None:
    text = "secrets:\n  token: {env: TOKEN_ENV}\nsteps:\n  - id: a\n    uses: test.record\n"
    with pytest.raises(recovery.UsageError, match="secret 'token' is missing \\(set TOKEN_ENV\\)"):
        recovery.run(book(tmp_path, text), config=config(tmp_path))
    assert CALLS == []


def test_the_library_does_not_import_the_cli() -> None:
    # The CLI stands on the API, never the reverse: the demo and the audit's remediation used to import it.
    code = (
        "import sys, recovery.api, recovery.cli.demo, recovery.audit.remediate, recovery.audit.command\n"
        "print('recovery.cli.main' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
