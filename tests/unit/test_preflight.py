"""The pre-flight: a run that cannot succeed is refused, exit 2, before anything changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from recovery.cli.main import main
from recovery.engine import preflight
from recovery.engine.config import Config
from recovery.engine.playbook import load_playbook, parse_playbook, resolve_inputs
from recovery.engine.preflight import PreflightError
from recovery.engine.templating import Unknown
from recovery.safety.redact import Secret

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"
SERIAL = PLAYBOOKS / "restore-access-serial.yaml"
VNC = PLAYBOOKS / "restore-access-vnc.yaml"
PIN = "SHA256:" + "A" * 43
GOOD = {"console_url": "ws://127.0.0.1:9/?token=t0k3n", "ssh_host": "127.0.0.1", "user": "ops",
        "host_key_fingerprint": PIN}


def check(path: Path, config: Config | None = None, **given: str) -> list[preflight.StepForecast]:
    playbook = load_playbook(path)
    inputs = resolve_inputs(playbook, given)
    secrets = {name: Secret("pw-for-tests", "<pw>") for name in playbook.secrets}
    return preflight.check(playbook, inputs, secrets, config or Config())


def problems(path: Path, config: Config | None = None, **given: str) -> str:
    with pytest.raises(PreflightError) as caught:
        check(path, config, **given)
    assert caught.value.exit_code == 2
    return str(caught.value)


def test_good_direct_inputs_pass() -> None:
    steps = {item.spec.id: item for item in check(SERIAL, **GOOD)}
    assert steps["find"].runs is False
    assert steps["verify"].runs is True


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"ssh_host": ""}, "no SSH address to verify"),
        ({"host_key_fingerprint": ""}, "no host key to check the VM against"),
        ({"host_key_fingerprint": "SHA256:abc"}, "with.host_key_fingerprint"),
        ({"host_key_fingerprint": f"{PIN},,{PIN}"}, "empty fingerprint between commas"),
        ({"ssh_port": "70000"}, "with.port (-e ssh_port): 70000 is not a TCP port"),
        ({"ssh_port": "0"}, "0 is not a TCP port"),
        ({"user": ""}, "with.user (-e user): is empty"),
        ({"user": "ops\x1b[2J"}, "control character"),
        ({"user": "-oProxyCommand"}, "starts with '-'"),
        ({"key_bits": "1024"}, "with.bits (-e key_bits): 1024 bits is not an RSA size"),
        ({"console_url": "http://127.0.0.1:6080/vnc_auto.html?path=%3Ftoken%3Dx"}, "is a vnc console URL"),
        ({"console_url": "ftp://127.0.0.1/x"}, "unsupported scheme 'ftp'"),
        ({"console_url": ""}, "no console URL"),
    ],
)
def test_each_bad_input_is_refused_by_name(change: dict[str, str], expected: str) -> None:
    assert expected in problems(SERIAL, **{**GOOD, **change})


def test_a_serial_url_given_to_the_vnc_playbook_is_refused() -> None:
    assert "is a serial console URL, but this step drives a vnc console" in problems(VNC, **GOOD)


def test_every_problem_is_listed_and_a_shared_input_only_once() -> None:
    text = problems(SERIAL, **{**GOOD, "user": "", "ssh_port": "99999", "key_bits": "512"})
    assert "(3 problems)" in text
    assert text.count("(-e user)") == 1


def test_trust_first_use_replaces_the_pin() -> None:
    check(SERIAL, **{**GOOD, "host_key_fingerprint": "", "trust_first_use": "true"})


def test_a_key_path_that_exists_is_refused(tmp_path: Path) -> None:
    taken = tmp_path / "id_ed25519"
    taken.write_text("someone's key")
    assert f"{taken} already exists" in problems(SERIAL, **{**GOOD, "key_path": str(taken)})


def test_a_server_without_a_cloud_is_refused_before_the_lookup() -> None:
    text = problems(SERIAL, **{**GOOD, "server": "web-1"})
    assert "step find (cloud.find_server" in text
    assert "none is named: pass --cloud NAME" in text


def test_what_a_lookup_will_find_is_not_held_against_the_run() -> None:
    # The host and the pin come from the cloud: unknown until the lookups ran, so nothing is refused yet.
    playbook = load_playbook(SERIAL)
    inputs = resolve_inputs(playbook, {"server": "web-1", "user": "ops"})
    secrets = {name: Secret("pw-for-tests", "<pw>") for name in playbook.secrets}
    steps = {item.spec.id: item for item in preflight.forecast(playbook, inputs, secrets, Config())}
    assert isinstance(steps["verify"].values["host"], Unknown)
    assert isinstance(steps["verify"].values["host_key_fingerprint"], Unknown)
    assert steps["verify"].problems == []


def test_after_the_lookups_a_missing_pin_is_refused_before_the_key_is_made() -> None:
    playbook = load_playbook(SERIAL)
    inputs = resolve_inputs(playbook, {"server": "web-1", "user": "ops"})
    secrets = {name: Secret("pw-for-tests", "<pw>") for name in playbook.secrets}
    done = {
        "find": {"id": "abc", "name": "web-1", "status": "ACTIVE", "ssh_host": "203.0.113.10"},
        "host_key": {"fingerprint": None},  # cloud-init printed no host keys
        "console_url": {"url": Secret("ws://127.0.0.1:9/?token=x", "ws://127.0.0.1:9/?token=***")},
    }
    with pytest.raises(PreflightError, match="no host key to check the VM against"):
        preflight.check(playbook, inputs, secrets, Config(), done=done)


def test_unknown_values_evaluate_partially() -> None:
    book = parse_playbook(
        """
inputs:
  a: {type: string, default: ""}
steps:
  - id: lookup
    uses: test.record
  - id: later
    uses: test.record
    when: "{{ inputs.a or steps.lookup.outputs.message }}"
  - id: never
    uses: test.record
    when: "{{ inputs.a and steps.lookup.outputs.message }}"
""",
        Path("book.yaml"),
    )
    steps = {item.spec.id: item for item in preflight.forecast(book, {"a": ""}, {}, Config())}
    assert steps["later"].runs is None  # decided by what `lookup` prints
    assert steps["never"].runs is False  # '' and anything is ''


def test_dry_run_refuses_what_the_run_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["run", str(SERIAL), "--dry-run", "--journal", str(tmp_path / "runs")]
    given = [f"-e{name}={value}" for name, value in {**GOOD, "ssh_port": "70000"}.items()]
    assert main([*args, *given]) == 2
    assert "70000 is not a TCP port" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_dry_run_of_an_inline_publish_shows_the_inline_command(capsys: pytest.CaptureFixture[str]) -> None:
    # The real run types the key itself when publish=inline; the plan must show that, not a download.
    given = [f"-e{name}={value}" for name, value in GOOD.items()]
    assert main(["run", str(SERIAL), "--dry-run", *given]) == 0
    typed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("       | ")]
    assert typed
    script = "\n".join(typed)
    assert "wget" not in script
    assert "curl" not in script
    assert "ssh-ed25519 " in script
