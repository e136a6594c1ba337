"""Which cloud a run talks to, how its calls are tagged, and what a broken clouds.yaml says.

The rule lives in `recovery.cloud.cloud_to_use`; the pre-flight (`cloud_named`), the
publish pre-flight and `StepContext.require_cloud` all follow it. Nothing here sends a
request: openstacksdk reads clouds.yaml and the OS_* variables only.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from recovery.cli.main import build_parser
from recovery.cloud import ENVVARS_CLOUD, NO_CLOUD, check_config, cloud_to_use, connect, global_request_id
from recovery.engine.config import CloudConfig, Config
from recovery.engine.report import RunReport
from recovery.errors import ConfigError
from recovery.steps.cloud import cloud_named
from recovery.steps.publish import _storage_configured

OPENRC = {
    "OS_AUTH_URL": "http://127.0.0.1:9/v3",
    "OS_USERNAME": "tester",
    "OS_PASSWORD": "tester-secret",
    "OS_PROJECT_NAME": "demo",
    "OS_USER_DOMAIN_NAME": "Default",
    "OS_PROJECT_DOMAIN_ID": "default",
}


@pytest.fixture(autouse=True)
def no_openstack_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only what a test sets: a developer's OS_* variables and clouds.yaml must not leak in."""
    for name in [name for name in os.environ if name.startswith("OS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(tmp_path / "clouds.yaml"))
    monkeypatch.chdir(tmp_path)  # openstacksdk also reads ./clouds.yaml


@pytest.mark.parametrize(
    ("name", "environ", "chosen"),
    [
        ("mycloud", {"OS_CLOUD": "other", **OPENRC}, "mycloud"),  # --cloud or the config wins
        (None, {"OS_CLOUD": "other", **OPENRC}, "other"),
        (None, OPENRC, ENVVARS_CLOUD),  # a sourced openrc, no OS_CLOUD
        (None, {**OPENRC, "OS_CLOUD_NAME": "from-env"}, "from-env"),  # openstacksdk's rename of envvars
        (None, {"OS_REGION_NAME": "RegionOne", "OS_USERNAME": "tester"}, None),  # no auth URL: not an openrc
        ("", {}, None),
    ],
)
def test_which_cloud_is_used(name: str | None, environ: dict[str, str], chosen: str | None) -> None:
    assert cloud_to_use(name, environ) == chosen


def test_an_openrc_environment_passes_the_pre_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable, value in OPENRC.items():
        monkeypatch.setenv(variable, value)
    assert cloud_named({}, Config()) == []
    assert _storage_configured({"method": "swift"}, Config()) == []


def test_no_cloud_anywhere_is_refused_and_openrc_is_named_as_a_way() -> None:
    (problem,) = cloud_named({}, Config())
    assert problem == f"this step talks to a cloud, but {NO_CLOUD}"
    assert "none is named: pass --cloud NAME" in problem
    assert "openrc" in problem
    assert _storage_configured({"method": "swift"}, Config()) == [f"publish=swift needs a cloud, but {NO_CLOUD}"]
    with pytest.raises(ConfigError, match="no cloud to connect to"):
        connect(None)


def test_envvars_without_an_openrc_says_to_source_one() -> None:
    problem = check_config(ENVVARS_CLOUD)
    assert problem is not None
    assert "OS_AUTH_URL is not set: source the cloud's openrc file first" in problem


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("clouds:\n  mycloud:\n    auth: {auth_url: http://127.0.0.1:9/v3\n    region_name: RegionOne\n", "line"),
        ("clouds:\n  mycloud:\n\tauth_type: none\n", "line 3"),  # a tab: YAML refuses it
    ],
)
def test_a_clouds_yaml_that_does_not_parse_is_reported_as_such(tmp_path: Path, text: str, where: str) -> None:
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(text, encoding="utf-8")
    problem = check_config("mycloud")
    assert problem is not None
    assert problem.startswith(f"{clouds} cannot be parsed")
    assert where in problem
    assert "not in" not in problem  # not "cloud 'mycloud' is not in ..."
    with pytest.raises(ConfigError, match=re.escape(f"{clouds} cannot be parsed")):
        connect("mycloud")


def test_a_clouds_yaml_that_is_not_utf8_is_reported_as_such(tmp_path: Path) -> None:
    clouds = tmp_path / "clouds.yaml"
    clouds.write_bytes(b"clouds:\n  mycloud:\n    region_name: R\xe9gion\n")  # Latin-1
    problem = check_config("mycloud")
    assert problem is not None
    assert problem.startswith(f"{clouds} cannot be parsed")


def test_a_broken_secure_yaml_is_reported_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "clouds.yaml").write_text("clouds:\n  mycloud:\n    auth_type: none\n", encoding="utf-8")
    secure = tmp_path / "secure.yaml"
    secure.write_text("clouds: [mycloud\n", encoding="utf-8")
    monkeypatch.setenv("OS_CLIENT_SECURE_FILE", str(secure))
    problem = check_config("mycloud")
    assert problem is not None
    assert problem.startswith(f"{secure} cannot be parsed")


def test_a_valid_clouds_yaml_still_lists_the_clouds_it_has(tmp_path: Path) -> None:
    (tmp_path / "clouds.yaml").write_text("clouds:\n  mycloud:\n    auth_type: none\n", encoding="utf-8")
    assert check_config("mycloud") is None
    assert check_config("other") == f"cloud 'other' is not in {tmp_path / 'clouds.yaml'}; the clouds there: mycloud"


def test_a_run_has_one_global_request_id_in_the_form_oslo_accepts() -> None:
    first = global_request_id("20261206T072800Z-a1b2c3")
    assert re.fullmatch(r"req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", first)
    assert global_request_id("20261206T072800Z-a1b2c3") == first  # a resumed run keeps it
    assert global_request_id("20261206T072800Z-a1b2c4") != first


def test_the_report_carries_the_global_request_id() -> None:
    report = RunReport(run_id="r", playbook="p.yaml", global_request_id="req-8f3c2a4e-5b1d-4c6e-9a7f-2d0b1e3c4a5f")
    assert report.to_json()["global_request_id"] == "req-8f3c2a4e-5b1d-4c6e-9a7f-2d0b1e3c4a5f"
    assert "global request ID `req-8f3c2a4e-5b1d-4c6e-9a7f-2d0b1e3c4a5f`" in report.to_markdown()
    assert "global request ID" not in RunReport(run_id="r", playbook="p.yaml").to_markdown()


@pytest.mark.parametrize(
    ("argv", "cloud"),
    [
        (["run", "p.yaml", "--os-cloud", "mycloud"], "mycloud"),
        (["run", "p.yaml", "--cloud", "mycloud"], "mycloud"),
        (["audit", "--os-cloud", "mycloud", "--user", "u", "--key", "k"], "mycloud"),
        (["audit", "--cloud", "--user", "u", "--key", "k"], ""),  # OS_CLOUD or the openrc, as a run picks
    ],
)
def test_os_cloud_is_an_alias_of_cloud(argv: list[str], cloud: str) -> None:
    assert build_parser().parse_args(argv).cloud == cloud


def test_the_configs_cloud_is_looked_up_in_clouds_yaml() -> None:
    (problem,) = cloud_named({}, Config(cloud=CloudConfig(name="from-config")))
    assert problem.startswith("cloud 'from-config' is not ")  # configured, or in the clouds.yaml found
