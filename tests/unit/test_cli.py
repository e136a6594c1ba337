"""The command line contract: exit codes, one-paragraph errors, where secrets may come from."""

from __future__ import annotations

from pathlib import Path

import pytest

from recovery.cli.main import main
from recovery.engine.playbook import load_playbook
from recovery.engine.sources import secret_values
from recovery.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]
SERIAL = ROOT / "playbooks" / "restore-access-serial.yaml"
VNC = ROOT / "playbooks" / "restore-access-vnc.yaml"
INVALID = ROOT / "tests" / "cases" / "invalid"


DIRECT = [
    "-e", "console_url=ws://127.0.0.1:9/?token=tok-123456", "-e", "ssh_host=127.0.0.1", "-e", "user=ops",
    "-e", "trust_first_use=true",
]


def test_validate_is_zero_for_good_and_two_for_bad_playbooks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(SERIAL)]) == 0
    assert main(["validate", str(SERIAL), str(INVALID / "many-problems.yaml")]) == 2
    err = capsys.readouterr().err
    assert "many-problems.yaml:11: steps[1].timeout" in err
    assert "Traceback" not in err


def test_broken_yaml_is_exit_two_with_file_and_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(INVALID / "broken-yaml.yaml")]) == 2
    err = capsys.readouterr().err
    assert "broken-yaml.yaml:6: not valid YAML" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-e", "ssh_host=h"], "required input is missing"),
        ([*DIRECT, "-e", "colour=blue"], "has no input 'colour'"),
        ([*DIRECT, "-e", "ssh_port=twenty"], "expected integer, got 'twenty'"),
        ([*DIRECT, "-e", "key_type=dsa"], "'dsa' is not one of ed25519, rsa"),
        ([*DIRECT, "-e", "noequals"], "expected NAME=VALUE"),
    ],
)
def test_bad_inputs_are_exit_two(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(SERIAL), "--dry-run", *args]) == 2
    assert message in capsys.readouterr().err


def test_unknown_command_line_options_are_exit_two(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(SERIAL), "--frobnicate"]) == 2
    assert main(["nonsense"]) == 2


def test_dry_run_masks_the_console_token_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(SERIAL), "--dry-run", "--journal", str(tmp_path / "runs"), *DIRECT]) == 0
    out = capsys.readouterr().out
    assert "tok-123456" not in out
    assert "ws://127.0.0.1:9/?token=***" in out
    assert "unset HISTFILE; sh <<'RECOVERY_SCRIPT_" in out
    assert not (tmp_path / "runs").exists()


def test_dry_run_of_the_vnc_playbook_shows_the_shorter_command_with_compact_facts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vnc = ["-e", "console_url=vnc://127.0.0.1:5999", "-e", "ssh_host=127.0.0.1", "-e", "user=ops",
           "-e", "trust_first_use=true"]
    assert main(["run", str(VNC), "--dry-run", "--journal", str(tmp_path / "runs"), *vnc]) == 0
    out = capsys.readouterr().out
    assert 'facts=$d$c$l$p "$b"' in out  # the terse one-line command (recovery.guest._terse_install)
    assert "snapshot" not in out
    assert main(["run", str(SERIAL), "--dry-run", "--journal", str(tmp_path / "runs"), *DIRECT]) == 0
    assert "snapshot before" in capsys.readouterr().out


def test_a_missing_secret_says_where_it_may_come_from(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["run", str(SERIAL), "--journal", str(tmp_path), *DIRECT])
    assert code == 2
    assert "set RECOVERY_CONSOLE_PASSWORD, or pass --secret console_password=@FILE" in capsys.readouterr().err


def test_secrets_come_from_a_file_before_the_environment(tmp_path: Path) -> None:
    playbook = load_playbook(SERIAL)
    secret_file = tmp_path / "pw"
    secret_file.write_text("from-the-file\n")
    env = {"RECOVERY_CONSOLE_PASSWORD": "from-the-env"}
    from_file = secret_values(playbook, {"console_password": f"@{secret_file}"}, env, prompt=None)
    assert from_file["console_password"].reveal() == "from-the-file"
    assert secret_values(playbook, {}, env, prompt=None)["console_password"].reveal() == "from-the-env"


def test_a_secret_on_the_command_line_is_refused() -> None:
    playbook = load_playbook(SERIAL)
    with pytest.raises(UsageError, match="visible to every user in the process list"):
        secret_values(playbook, {"console_password": "hunter2"}, {}, prompt=None)


def test_steps_lists_every_step_type_with_inputs_and_outputs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["steps"]) == 0
    out = capsys.readouterr().out
    for name in ("keys.generate", "publish.inline", "publish.http", "console.open", "console.login",
                 "authorized_keys.install", "ssh.verify", "report.write"):
        assert f"{name}: " in out
    assert "host_key_fingerprint" in out


def test_resume_of_an_unknown_run_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", str(SERIAL), "--journal", str(tmp_path), "--resume", "nope", *DIRECT])
    assert code == 2
    assert "no run 'nope' to resume" in capsys.readouterr().err
