"""The runner when things go wrong: resumes, interruptions, a full disk, secrets too short to mask, the umask."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest

from recovery.channels.dialogue import ConsoleSession
from recovery.engine import journal as journal_module
from recovery.engine.config import Config, KeysConfig
from recovery.engine.context import StepContext
from recovery.engine.journal import Journal
from recovery.engine.playbook import parse_playbook, resolve_inputs
from recovery.engine.registry import Outputs, step
from recovery.engine.runner import Runner, RunRequest
from recovery.errors import JournalError
from recovery.safety.files import make_dirs
from recovery.safety.redact import Secret
from recovery.ssh.keys import generate_keypair
from tests.unit.fake_console import FakeConsole
from tests.unit.fake_steps import CALLS, RESUMABLE, OnceParams, run


@step("test.transcribe", params=OnceParams, outputs={}, repeatable=True)
def transcribe(ctx: StepContext, params: OnceParams) -> Outputs:
    """Type into a console: the transcript first (as ConsoleSession does), then the change on the VM."""
    ctx.journal.transcript(f">>> {params.value}\n")
    ctx.report.vm_changes.append(f"typed {params.value}")
    ctx.defer("logged out of the console", lambda: CALLS.append("logout"))
    return {}


@step("test.interrupted_cleanup", params=OnceParams, outputs={}, repeatable=True)
def interrupted_cleanup(ctx: StepContext, params: OnceParams) -> Outputs:
    """Defer a cleanup that a second Ctrl-C cuts short."""

    def cut_short() -> None:
        CALLS.append("cleanup:cut-short")
        raise KeyboardInterrupt

    ctx.defer("withdrew the slow thing", cut_short)
    return {}


def test_a_run_resumes_any_number_of_times(tmp_path: Path) -> None:
    _, journal = run(tmp_path, RESUMABLE, inputs={"fail": True})
    run(tmp_path, RESUMABLE, inputs={"fail": True}, previous=journal.load_steps(), journal=journal)
    CALLS.clear()
    again, _ = run(tmp_path, RESUMABLE, inputs={"fail": False}, previous=journal.load_steps(), journal=journal)
    assert again.status == "succeeded"
    assert "key:once" not in CALLS
    assert [r.status for r in again.timeline] == ["resumed", "succeeded"]


KEYED = """
inputs:
  fail: {type: boolean, default: false}
steps:
  - id: key
    uses: keys.generate
  - id: work
    uses: test.record
    with: {message: "{{ steps.key.outputs.sha256 }}", fail: "{{ inputs.fail }}"}
"""


def keyed_run(tmp_path: Path, *, fail: bool, journal=None):
    playbook = parse_playbook(KEYED, tmp_path / "book.yaml")
    journal = journal or Journal.create(tmp_path / "runs")
    config = Config(keys=KeysConfig(dir=tmp_path / "keys"))
    previous = journal.load_steps() if journal.path("run.json").exists() else None
    return Runner(RunRequest(playbook, {"fail": fail}, {}, config), journal, previous=previous).run(), journal


def test_a_resumed_run_refuses_a_private_key_that_is_not_the_saved_one(tmp_path: Path) -> None:
    failed, journal = keyed_run(tmp_path, fail=True)
    private = Path(failed.keys[0]["private_key_path"])
    private.unlink()
    private.with_name(private.name + ".pub").unlink()
    generate_keypair(private)  # another key where the first one was
    resumed, _ = keyed_run(tmp_path, fail=False, journal=journal)
    assert resumed.status == "failed"
    assert resumed.failed_step == "key"
    assert f"the earlier attempt made key {failed.keys[0]['sha256']}" in (resumed.error or "")


def test_a_resumed_run_keeps_a_key_that_still_matches(tmp_path: Path) -> None:
    _, journal = keyed_run(tmp_path, fail=True)
    resumed, _ = keyed_run(tmp_path, fail=False, journal=journal)
    assert resumed.status == "succeeded"
    assert resumed.timeline[0].status == "resumed"


def test_a_sensitive_input_never_reaches_run_json_whatever_its_shape(tmp_path: Path) -> None:
    token = "bare-token-not-a-url-5f3c"
    playbook = parse_playbook(
        "inputs:\n  token: {type: string, sensitive: true}\nsteps:\n  - id: a\n    uses: test.record\n"
        "    with: {message: '{{ inputs.token }}'}\n",
        tmp_path / "b.yaml",
    )
    inputs = resolve_inputs(playbook, {"token": token})
    journal = Journal.create(tmp_path / "runs")
    Runner(RunRequest(playbook, inputs, {}, Config()), journal).run()
    everything = "".join(p.read_text() for p in journal.directory.rglob("*") if p.is_file())
    assert token not in everything
    assert json.loads(journal.path("run.json").read_text())["inputs"]["token"] == "***"


def test_a_step_cut_off_by_ctrl_c_may_have_changed_the_vm(tmp_path: Path) -> None:
    playbook = parse_playbook(
        "steps:\n  - id: a\n    uses: test.record\n  - id: b\n    uses: test.interrupt\n", tmp_path / "b.yaml"
    )
    journal = Journal.create(tmp_path / "runs")
    with pytest.raises(KeyboardInterrupt):
        Runner(RunRequest(playbook, {}, {}, Config()), journal).run()
    report = json.loads(journal.path("report.json").read_text())
    assert report["failed_step"] == "b"
    assert report["timeline"][1]["status"] == "interrupted"
    assert "may have changed the VM" in report["timeline"][1]["error"]
    assert any("b (test.interrupt) was cut off mid-way: it may have changed the VM" in c for c in report["vm_changes"])
    assert journal.load_steps()["b"]["status"] == "interrupted"


def test_a_second_ctrl_c_during_cleanup_cuts_short_only_that_cleanup(tmp_path: Path) -> None:
    playbook = parse_playbook(
        "steps:\n  - id: a\n    uses: test.record\n  - id: slow\n    uses: test.interrupted_cleanup\n"
        "  - id: b\n    uses: test.interrupt\n",
        tmp_path / "b.yaml",
    )
    journal = Journal.create(tmp_path / "runs")
    progress: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        Runner(RunRequest(playbook, {}, {}, Config()), journal, progress=progress.append).run()
    assert CALLS == ["a:", "b:interrupt", "cleanup:cut-short", "undo:a"]
    report = json.loads(journal.path("report.json").read_text())
    assert report["status"] == "interrupted"
    assert "cleanup interrupted by a second Ctrl-C: withdrew the slow thing" in report["notes"]
    assert report["rolled_back"] == ["undo a"]
    assert any("cleanup cut short by Ctrl-C: withdrew the slow thing" in line for line in progress)


def _full_disk_for(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    real = journal_module._append

    def append(path: Path, text: str) -> None:
        if path.name == name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path, text)

    monkeypatch.setattr(journal_module, "_append", append)


def test_typing_goes_on_when_the_transcript_cannot_be_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _full_disk_for(monkeypatch, "transcript.log")
    journal = Journal.create(tmp_path / "runs")
    console = FakeConsole()
    session = ConsoleSession(console, journal.transcript)
    session.login("ops", Secret("s3cret-pass"), timeout=5)
    session.logout()
    assert console.state == "login", "logged in and out again, without a transcript"
    assert "No space left on device" in (journal.transcript_problem or "")


def test_a_full_disk_under_the_transcript_is_reported_with_what_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _full_disk_for(monkeypatch, "transcript.log")
    report, _ = run(tmp_path, "steps:\n  - id: install\n    uses: test.transcribe\n    with: {value: the key}\n")
    assert report.status == "succeeded"
    assert report.vm_changes == ["typed the key"]
    assert any("transcript" in note and "No space left on device" in note for note in report.notes)
    assert CALLS == ["logout"]


def test_a_full_journal_disk_still_logs_the_console_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = Journal.create(tmp_path / "runs")
    playbook = parse_playbook(
        "steps:\n  - id: install\n    uses: test.transcribe\n    with: {value: the key}\n"
        "  - id: after\n    uses: test.record\n",
        tmp_path / "b.yaml",
    )
    real_save = Journal.save_step

    def save_step(self: Journal, index: int, step_id: str, record: object) -> None:
        if step_id == "install":
            raise JournalError(f"cannot write {self.directory}/steps: No space left on device")
        real_save(self, index, step_id, record)  # type: ignore[arg-type]

    monkeypatch.setattr(Journal, "save_step", save_step)
    runner = Runner(RunRequest(playbook, {}, {}, Config()), journal)
    with pytest.raises(JournalError):
        runner.run()
    assert CALLS == ["logout"]
    assert runner.report.vm_changes == ["typed the key"]
    assert "logged out of the console" in runner.report.rolled_back


def test_a_secret_too_short_to_mask_turns_the_transcript_off(tmp_path: Path) -> None:
    report, journal = run(
        tmp_path,
        "secrets:\n  pw: {env: TEST_PW}\nsteps:\n  - id: install\n    uses: test.transcribe\n    with: {value: abc}\n",
        secrets={"pw": Secret("abc", "<pw>")},
    )
    assert not journal.path("transcript.log").exists()
    assert any("no transcript" in note and "secrets.pw" in note for note in report.notes)


def test_everything_a_run_creates_is_private_under_umask_000(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("not yours\n")
    incident = tmp_path / "incident" / "sub"
    old = os.umask(0)
    try:
        journal = Journal.create(tmp_path / "state" / "recovery" / "runs")
        playbook = parse_playbook(
            f"steps:\n  - id: key\n    uses: keys.generate\n  - id: save\n    uses: report.write\n"
            f"    with: {{path: '{incident / 'report.md'}'}}\n",
            tmp_path / "b.yaml",
        )
        config = Config(keys=KeysConfig(dir=tmp_path / "home" / ".ssh" / "recovery"))
        make_dirs(incident)
        (incident / "report.md").symlink_to(victim)  # planted: the report must not write through it
        report = Runner(RunRequest(playbook, {}, {}, config), journal).run()
    finally:
        os.umask(old)
    assert report.status == "succeeded"
    assert victim.read_text() == "not yours\n"
    assert not (incident / "report.md").is_symlink()
    assert stat.S_IMODE((incident / "report.md").stat().st_mode) == 0o600
    key = Path(report.keys[0]["private_key_path"])
    for directory in (tmp_path / "state", tmp_path / "state" / "recovery", journal.directory.parent,
                      journal.directory, journal.directory / "steps", tmp_path / "home", tmp_path / "home" / ".ssh",
                      key.parent.parent, key.parent, tmp_path / "incident", incident):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    for path in journal.directory.rglob("*"):
        assert path.stat().st_mode & 0o077 == 0, path
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.with_name(key.name + ".pub").stat().st_mode) == 0o644


def test_a_run_with_its_own_key_path_resumes_past_the_pre_flight(tmp_path: Path) -> None:
    """The key file the first attempt wrote is that run's own key, not one in the way."""
    own_path = f"    with: {{path: '{tmp_path / 'k' / 'id'}'}}\n"
    playbook = parse_playbook(KEYED.replace("keys.generate\n", "keys.generate\n" + own_path), tmp_path / "b.yaml")
    journal = Journal.create(tmp_path / "runs")
    for fail, status in ((True, "failed"), (True, "failed"), (False, "succeeded")):
        previous = journal.load_steps()
        report = Runner(RunRequest(playbook, {"fail": fail}, {}, Config()), journal, previous=previous).run()
        assert (report.status, report.failed_step) == (status, "work" if fail else None), report.error


def test_a_ctrl_c_while_the_report_is_saved_does_not_cost_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Journal.write_json
    pressed: list[str] = []

    def write_json(self: Journal, name: str, data: object) -> None:
        if name == "report.json" and not pressed:
            pressed.append(name)
            raise KeyboardInterrupt
        real(self, name, data)

    monkeypatch.setattr(Journal, "write_json", write_json)
    report, journal = run(tmp_path, "steps:\n  - id: a\n    uses: test.record\n")
    saved = json.loads(journal.path("report.json").read_text())
    assert saved["status"] == report.status == "succeeded"
    assert "a Ctrl-C arrived while this report was being saved; saved again" in saved["notes"]
