"""The runner's phases, retries, conditions, resume and journal, with test-only step types."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from recovery.engine.config import Config
from recovery.engine.journal import Journal
from recovery.engine.playbook import parse_playbook
from recovery.engine.preflight import PreflightError
from recovery.engine.runner import Runner, RunRequest
from recovery.errors import TemplateError
from recovery.safety.redact import Secret
from tests.unit.fake_steps import CALLS, RESUMABLE, run

PHASES = """
steps:
  - id: first
    uses: test.record
    with: {message: one}
    cleanup:
      - id: first_cleanup
        uses: test.record
        with: {message: "cleaning after {{ steps.first.outputs.message }}"}
  - id: second
    uses: test.record
    with: {message: two, fail: true}
  - id: never
    uses: test.record
    with: {message: never}
  - id: finally
    uses: test.record
    always: true
    with: {message: always}
"""


def test_a_failure_stops_the_main_phase_then_cleanup_runs_newest_first_then_always(tmp_path: Path) -> None:
    report, journal = run(tmp_path, PHASES)
    assert CALLS == [
        "first:one",
        "second:two",
        "first_cleanup:cleaning after one",
        "undo:first_cleanup",
        "undo:first",
        "finally:always",
        "undo:finally",
    ]
    assert report.status == "failed"
    assert report.failed_step == "second"
    assert "failed on purpose" in (report.error or "")
    assert [(r.id, r.status, r.phase) for r in report.timeline] == [
        ("first", "succeeded", "main"),
        ("second", "failed", "main"),
        ("first_cleanup", "succeeded", "cleanup"),
        ("finally", "succeeded", "always"),
    ]
    saved = json.loads(journal.path("run.json").read_text())
    assert saved["status"] == "failed"
    assert saved["failed_step"] == "second"


def test_transient_errors_are_retried_up_to_the_attempts(tmp_path: Path) -> None:
    report, _ = run(
        tmp_path,
        """
steps:
  - id: flaky
    uses: test.record
    retry: {attempts: 3, delay: 0.01, max_delay: 0.01}
    with: {transient_failures: 2}
""",
    )
    assert report.status == "succeeded"
    assert report.timeline[0].attempts == 3


def test_retries_stop_at_the_attempt_limit(tmp_path: Path) -> None:
    report, _ = run(
        tmp_path,
        """
steps:
  - id: flaky
    uses: test.record
    retry: {attempts: 2, delay: 0.01, max_delay: 0.01}
    with: {transient_failures: 5}
""",
    )
    assert report.status == "failed"
    assert report.timeline[0].attempts == 2
    assert "transient failure 2" in (report.error or "")


def test_without_a_retry_block_a_transient_error_fails_at_once(tmp_path: Path) -> None:
    report, _ = run(tmp_path, "steps:\n  - id: flaky\n    uses: test.record\n    with: {transient_failures: 1}\n")
    assert report.status == "failed"
    assert report.timeline[0].attempts == 1


def test_permanent_errors_are_never_retried(tmp_path: Path) -> None:
    report, _ = run(
        tmp_path,
        "steps:\n  - id: bad\n    uses: test.record\n    retry: 5\n    with: {fail: true}\n",
    )
    assert report.timeline[0].attempts == 1


def test_when_skips_and_the_skipped_outputs_are_null(tmp_path: Path) -> None:
    report, _ = run(
        tmp_path,
        """
inputs:
  mode: {type: string, default: inline}
steps:
  - id: http
    uses: test.record
    when: "{{ inputs.mode == 'http' }}"
    with: {message: served}
  - id: use
    uses: test.record
    with: {message: "{{ steps.http.outputs.message or 'typed' }}"}
""",
        inputs={"mode": "inline"},
    )
    assert [r.status for r in report.timeline] == ["skipped", "succeeded"]
    assert CALLS == ["use:typed", "undo:use"]


def test_a_template_that_cannot_render_is_refused_before_any_step_runs(tmp_path: Path) -> None:
    with pytest.raises(PreflightError, match=r"step use .*cannot be joined with text") as caught:
        run(
            tmp_path,
            """
steps:
  - id: first
    uses: test.record
  - id: skipped
    uses: test.record
    when: "{{ false }}"
  - id: use
    uses: test.record
    with: {message: "prefix {{ steps.skipped.outputs.message }}"}
""",
        )
    assert CALLS == []
    assert caught.value.exit_code == 2


def test_a_template_that_fails_at_run_time_fails_its_step(tmp_path: Path) -> None:
    # Whether `skipped` runs is known only once `gate` has run, so the pre-flight lets it through.
    report, _ = run(
        tmp_path,
        """
steps:
  - id: gate
    uses: test.record
  - id: skipped
    uses: test.record
    when: "{{ steps.gate.outputs.message }}"
  - id: use
    uses: test.record
    with: {message: "prefix {{ steps.skipped.outputs.message }}"}
""",
    )
    assert report.failed_step == "use"
    assert "cannot be joined with text" in (report.error or "")
    assert TemplateError.__name__ in journal_events(report, tmp_path)


def journal_events(report, tmp_path: Path) -> str:
    return (tmp_path / "runs" / report.run_id / "events.jsonl").read_text()


def test_resume_skips_completed_steps_that_must_not_repeat_and_reruns_the_rest(tmp_path: Path) -> None:
    failed, journal = run(tmp_path, RESUMABLE, inputs={"fail": True})
    assert failed.status == "failed"
    assert CALLS == ["key:once", "work:first-key"]
    CALLS.clear()
    resumed, _ = run(tmp_path, RESUMABLE, inputs={"fail": False}, previous=journal.load_steps(), journal=journal)
    assert resumed.status == "succeeded"
    assert CALLS == ["work:first-key", "undo:work"]
    assert [r.status for r in resumed.timeline] == ["resumed", "succeeded"]


def test_ctrl_c_still_cleans_up_and_marks_the_journal_interrupted(tmp_path: Path) -> None:
    playbook = parse_playbook(
        "steps:\n  - id: a\n    uses: test.record\n  - id: b\n    uses: test.interrupt\n", tmp_path / "b.yaml"
    )
    journal = Journal.create(tmp_path / "runs")
    with pytest.raises(KeyboardInterrupt):
        Runner(RunRequest(playbook, {}, {}, Config()), journal).run()
    assert CALLS == ["a:", "b:interrupt", "undo:a"]
    assert json.loads(journal.path("run.json").read_text())["status"] == "interrupted"
    assert json.loads(journal.path("report.json").read_text())["status"] == "interrupted"


def test_secrets_reach_steps_but_never_the_journal_report_or_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    password = "correct-horse-battery-staple"
    caplog.set_level(logging.DEBUG)
    from recovery.safety.redact import RedactingFilter

    caplog.handler.addFilter(RedactingFilter())
    report, journal = run(
        tmp_path,
        """
secrets:
  pw: {env: TEST_PW}
steps:
  - id: use
    uses: test.record
    with: {message: "login with {{ secrets.pw }}"}
  - id: boom
    uses: test.record
    with: {message: "{{ secrets.pw }}", fail: true}
""",
        secrets={"pw": Secret(password, "<pw>")},
    )
    assert report.status == "failed"
    assert CALLS[0] == "use:login with ***"  # str() of the Secret a step receives is masked
    everything = caplog.text + "".join(p.read_text() for p in journal.directory.rglob("*") if p.is_file())
    assert password not in everything
    assert "login with ***" in everything
    for path in journal.directory.rglob("*"):
        assert path.stat().st_mode & 0o077 == 0, path


def test_a_bug_in_a_step_is_a_failed_run_not_a_success(tmp_path: Path) -> None:
    playbook = parse_playbook(
        "steps:\n  - id: a\n    uses: test.record\n  - id: b\n    uses: test.crash\n", tmp_path / "b.yaml"
    )
    journal = Journal.create(tmp_path / "runs")
    with pytest.raises(ZeroDivisionError):
        Runner(RunRequest(playbook, {}, {}, Config()), journal).run()
    assert CALLS == ["a:", "undo:a"]
    report = json.loads(journal.path("report.json").read_text())
    assert report["status"] == "failed"
    assert report["failed_step"] == "b"
    assert "internal error: ZeroDivisionError" in report["error"]
