"""The rescue playbook's pre-flight and dry run, without a cloud: refused before anything changes."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from recovery.cloud import Image
from recovery.engine.config import CloudConfig, Config
from recovery.engine.context import SharedState, StepContext
from recovery.engine.journal import Journal
from recovery.engine.playbook import load_playbook, resolve_inputs
from recovery.engine.preflight import PreflightError, check
from recovery.engine.report import RunReport
from recovery.errors import CloudError
from recovery.safety.redact import Secret
from recovery.steps.rescue import ImageParams, find_image

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "playbooks" / "restore-access-rescue.yaml"
PIN = "SHA256:" + "A" * 43


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text("clouds:\n  c:\n    auth_type: none\n    compute_endpoint_override: http://127.0.0.1:9/v2.1\n")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    return Config(cloud=CloudConfig(name="c"))


@pytest.mark.parametrize(("given", "problem", "where"), [
    ({"rescue_image": "img"}, "give -e allow_reboot=true", "rescue (rescue.enter"),
    ({"rescue_image": "img", "allow_reboot": "false"}, "give -e allow_reboot=true", "rescue (rescue.enter"),
    ({"allow_reboot": "true"}, "no rescue image", "rescue_image (rescue.find_image"),
    ({"allow_reboot": "true", "rescue_image": "  "}, "no rescue image", "rescue_image (rescue.find_image"),
])
def test_the_preflight_refuses_before_the_first_step(
    config: Config, given: dict[str, str], problem: str, where: str
) -> None:
    playbook = load_playbook(PLAYBOOK)
    inputs = resolve_inputs(playbook, {"server": "web-1", "user": "debian", "host_key_fingerprint": PIN, **given})
    with pytest.raises(PreflightError, match=rf"step {re.escape(where)}") as caught:
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


class ImageCloud:
    """find_image over a fixed list of images, as `OpenStackCloud.find_image` decides: ID first, else a unique name."""

    def __init__(self, *images: Image) -> None:
        self.images = images

    def find_image(self, name_or_id: str) -> Image:
        by_id = [image for image in self.images if image.id == name_or_id]
        named = by_id or [image for image in self.images if image.name == name_or_id]
        if len(named) != 1:
            raise CloudError(f"{len(named)} images are named {name_or_id!r}")
        return named[0]


def image_context(tmp_path: Path, cloud: ImageCloud) -> StepContext:
    journal = Journal.create(tmp_path / "runs")
    return StepContext(
        run_id=journal.run_id, run_dir=journal.directory, journal=journal, config=Config(),
        report=RunReport(journal.run_id, "test"), shared=SharedState(cloud=cloud),  # type: ignore[arg-type]
        deadline=time.monotonic() + 60,
    )


def test_the_image_step_gives_the_id_of_a_name_and_the_report_says_which(tmp_path: Path) -> None:
    ctx = image_context(tmp_path, ImageCloud(Image("i-1", "rescue", "ACTIVE"), Image("i-2", "other", "ACTIVE")))

    assert find_image(ctx, ImageParams(image=" rescue ")) == {"id": "i-1", "name": "rescue"}
    assert find_image(ctx, ImageParams(image="i-2")) == {"id": "i-2", "name": "other"}
    assert ctx.report.notes == ["rescue image i-1 (named 'rescue'), ACTIVE", "rescue image i-2, ACTIVE"]


def test_the_image_step_lets_the_clouds_refusal_through_with_nothing_noted(tmp_path: Path) -> None:
    ctx = image_context(tmp_path, ImageCloud(Image("i-1", "rescue", "ACTIVE"), Image("i-2", "rescue", "ACTIVE")))

    with pytest.raises(CloudError, match="2 images are named 'rescue'"):
        find_image(ctx, ImageParams(image="rescue"))
    assert ctx.report.notes == []
