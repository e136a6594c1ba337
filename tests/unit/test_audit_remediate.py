"""Remediation's blast-radius limit, confirmation and failure handling, with a fake playbook runner."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from recovery.audit.model import Host, HostResult, Remediation, Status
from recovery.audit.remediate import InProcessPlaybookRunner, confirm_on_terminal, remediate
from recovery.engine.config import Config
from recovery.errors import UsageError

PLAYBOOK = Path(__file__).resolve().parents[2] / "playbooks" / "restore-access-serial.yaml"


def failed(name: str, status: Status = Status.AUTH_REJECTED, *, server_id: str | None = None) -> HostResult:
    host = Host(name, "10.0.0.1", 2222, "ops", (Path("/k"),), server_id=server_id)
    return HostResult(host, status, 0.1, "refused the key", host_key_fingerprint="SHA256:" + "C" * 43)


class FakeRunner:
    """Records the hosts it was asked to recover; the outcome per host is scripted."""

    def __init__(self, outcomes: dict[str, str] | None = None) -> None:
        self.outcomes = outcomes or {}
        self.ran: list[str] = []

    def run(self, result: HostResult) -> Remediation:
        name = result.host.name
        self.ran.append(name)
        outcome = self.outcomes.get(name, "succeeded")
        return Remediation(name, outcome, "", run_id=f"run-{name}", journal=Path(f"/runs/run-{name}"), exit_code=0)


def test_at_most_max_remediations_run_and_the_rest_are_listed_as_skipped() -> None:
    runner = FakeRunner()
    hosts = [failed(f"vm-{n}") for n in range(5)]

    done = list(remediate(hosts, runner, limit=2, confirm=lambda result: True))

    assert runner.ran == ["vm-0", "vm-1"]
    assert [(item.host, item.outcome) for item in done] == [
        ("vm-0", "succeeded"),
        ("vm-1", "succeeded"),
        ("vm-2", "skipped"),
        ("vm-3", "skipped"),
        ("vm-4", "skipped"),
    ]
    assert done[2].message == "--max-remediations 2 reached"


def test_a_declined_host_does_not_use_up_the_limit() -> None:
    runner = FakeRunner()

    done = list(remediate([failed("a"), failed("b")], runner, limit=1, confirm=lambda r: r.host.name != "a"))

    assert runner.ran == ["b"]
    assert [item.outcome for item in done] == ["declined", "succeeded"]


def test_only_rejected_keys_are_remediated_never_a_changed_host_key() -> None:
    runner = FakeRunner()
    results = [failed("moved", Status.HOST_KEY_CHANGED), failed("down", Status.TIMEOUT), failed("key")]

    done = list(remediate(results, runner, limit=5, confirm=lambda result: True))

    assert runner.ran == ["key"]
    assert [(item.host, item.outcome) for item in done[:2]] == [("moved", "skipped"), ("down", "skipped")]
    assert "does not fix host_key_changed" in done[0].message


def test_a_failed_run_is_reported_and_the_next_host_still_runs() -> None:
    runner = FakeRunner({"a": "failed"})

    done = list(remediate([failed("a"), failed("b")], runner, limit=2, confirm=lambda result: True))

    assert runner.ran == ["a", "b"]
    assert [item.outcome for item in done] == ["failed", "succeeded"]


def test_an_interrupted_run_stops_remediation() -> None:
    runner = FakeRunner({"a": "interrupted"})

    done = list(remediate([failed("a"), failed("b")], runner, limit=2, confirm=lambda result: True))

    assert runner.ran == ["a"]
    assert [item.outcome for item in done] == ["interrupted"]


def test_the_real_runner_passes_what_the_audit_knows_as_playbook_inputs(tmp_path: Path) -> None:
    runner = InProcessPlaybookRunner(PLAYBOOK, config=Config(), journal_root=tmp_path, network="private")

    from_file = runner.inputs_for(failed("web-1"))
    from_cloud = runner.inputs_for(failed("web-2", server_id="6f1c-id"))

    assert from_file == {
        "ssh_host": "10.0.0.1",
        "ssh_port": "2222",
        "user": "ops",
        "host_key_fingerprint": "SHA256:" + "C" * 43,
    }
    assert from_cloud == {**from_file, "server": "6f1c-id", "network": "private"}


def test_the_terminal_question_goes_to_stderr_and_only_yes_means_yes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    confirm = confirm_on_terminal(PLAYBOOK)
    answers = []
    for typed in ("y\n", "YES\n", "n\n", "\n", ""):  # "" is the end of input
        monkeypatch.setattr(sys, "stdin", io.StringIO(typed))
        answers.append(confirm(failed("web-1")))

    assert answers == [True, True, False, False, False]
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout carries the audit's report
    assert "Run restore-access-serial.yaml to recover web-1? [y/N]" in captured.err


def from_inventory(
    name: str, inputs: tuple[tuple[str, str], ...] = (), secrets: tuple[tuple[str, Path], ...] = ()
) -> HostResult:
    host = Host(name, "10.0.0.1", 2222, "ops", (Path("/k"),), inputs=inputs, secrets=secrets)
    return HostResult(host, Status.AUTH_REJECTED, 0.1, "refused the key", host_key_fingerprint="SHA256:" + "C" * 43)


def test_a_file_inventory_gives_the_console_url_and_password_the_audit_cannot_know(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = tmp_path / "console.password"
    password.write_text("s3cret-pass\n")
    monkeypatch.delenv("RECOVERY_CONSOLE_PASSWORD", raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # no terminal: a missing secret would be an error
    runner = InProcessPlaybookRunner(PLAYBOOK, config=Config(), journal_root=tmp_path)
    result = from_inventory(
        "web-1",
        inputs=(("console_url", "ws://127.0.0.1:6083/?token=t"), ("key_type", "rsa")),
        secrets=(("console_password", password),),
    )

    runner.check_hosts([result.host])

    assert runner.inputs_for(result) == {
        "ssh_host": "10.0.0.1",
        "ssh_port": "2222",
        "user": "ops",
        "host_key_fingerprint": "SHA256:" + "C" * 43,
        "console_url": "ws://127.0.0.1:6083/?token=t",
        "key_type": "rsa",
    }
    assert runner._secrets_for(result.host)["console_password"].reveal() == "s3cret-pass"


def test_inventory_names_the_playbook_does_not_declare_are_a_usage_error_before_any_check(tmp_path: Path) -> None:
    runner = InProcessPlaybookRunner(PLAYBOOK, config=Config(), journal_root=tmp_path)
    typo = from_inventory("web-1", inputs=(("consol_url", "ws://x"),), secrets=(("password", tmp_path / "p"),))

    with pytest.raises(UsageError) as caught:
        runner.check_hosts([typo.host])

    message = str(caught.value)
    assert "host 'web-1': inputs.consol_url: restore-access-serial.yaml declares no input 'consol_url'" in message
    assert "host 'web-1': secrets.password: restore-access-serial.yaml declares no secret 'password' (secrets: " \
        "console_password)" in message
