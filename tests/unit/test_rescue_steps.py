"""The rescue playbook's pre-flight and dry run, without a cloud: refused before anything changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from recovery.engine.config import CloudConfig, Config
from recovery.engine.playbook import load_playbook, resolve_inputs
from recovery.engine.preflight import PreflightError, check
from recovery.safety.redact import Secret

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "playbooks" / "restore-access-rescue.yaml"
PIN = "SHA256:" + "A" * 43


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text("clouds:\n  c:\n    auth_type: none\n    compute_endpoint_override: http://127.0.0.1:9/v2.1\n")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    return Config(cloud=CloudConfig(name="c"))


@pytest.mark.parametrize(("given", "problem"), [
    ({"rescue_image": "img"}, "give -e allow_reboot=true"),
    ({"rescue_image": "img", "allow_reboot": "false"}, "give -e allow_reboot=true"),
    ({"allow_reboot": "true"}, "no rescue image"),
    ({"allow_reboot": "true", "rescue_image": "  "}, "no rescue image"),
])
def test_the_preflight_refuses_before_the_first_step(config: Config, given: dict[str, str], problem: str) -> None:
    playbook = load_playbook(PLAYBOOK)
    inputs = resolve_inputs(playbook, {"server": "web-1", "user": "debian", "host_key_fingerprint": PIN, **given})
    with pytest.raises(PreflightError, match=r"step rescue \(rescue.enter") as caught:
        check(playbook, inputs, {"rescue_password": Secret("pw-123456")}, config)
    assert problem in str(caught.value)
    assert len(caught.value.problems) == 1, caught.value.problems


def test_with_both_the_preflight_passes(config: Config) -> None:
    playbook = load_playbook(PLAYBOOK)
    inputs = resolve_inputs(playbook, {"server": "web-1", "user": "debian", "host_key_fingerprint": PIN,
                                       "rescue_image": "img", "allow_reboot": "true"})
    check(playbook, inputs, {"rescue_password": Secret("pw-123456")}, config)


def test_the_dry_run_shows_the_mounted_install_with_stand_ins_for_what_is_not_known_yet() -> None:
    from recovery.steps.rescue import InstallParams, _preview_install

    lines = _preview_install(InstallParams(key="<steps.key.outputs.public_key>", user="debian",
                                           device="<steps.root_disk.outputs.device>"))
    text = "\n".join(lines)
    assert "dv='/dev/vdb1'" in text
    assert "uu='debian'" in text
    assert "awk -F: -v u=\"$uu\" '$1==u' \"$p/etc/passwd\"" in text
