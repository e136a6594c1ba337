"""cloud.set_password and its safety net, against a fake Cloud (the real Nova path is tests/e2e/test_password_route.py).

What must hold whatever the cloud answers: no password is set for an image that says it has no agent; a
409/501 leaves nothing to undo; a password Nova set is made unusable at the end unless the lock step
locked it; the password is a Secret that never shows in the report.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from recovery.cloud import Server
from recovery.engine import routes
from recovery.engine.config import Config
from recovery.engine.context import SharedState, StepContext
from recovery.engine.journal import Journal
from recovery.engine.report import RunReport
from recovery.errors import CloudError, NotPossible
from recovery.guest import LockExitCode
from recovery.safety.redact import Secret
from recovery.steps.cloud import (
    LockPasswordParams,
    SetPasswordParams,
    lock_password,
    password_lock_seen,
    set_password,
)

SERVER = Server(id="0b9c", name="web-1", status="ACTIVE", addresses={}, image_id="img")


class FakeCloud:
    """find_server, image_properties and set_password, recording every password set."""

    def __init__(self, properties: dict[str, str] | None, failures: list[CloudError] | None = None) -> None:
        self.properties = properties
        self.failures = failures or []
        self.passwords: list[Secret] = []

    def find_server(self, name_or_id: str) -> Server:
        return SERVER

    def image_properties(self, server: Server) -> dict[str, str] | None:
        return self.properties

    def set_password(self, server: Server, password: Secret) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.passwords.append(password)


def context(tmp_path: Path, cloud: FakeCloud) -> StepContext:
    journal = Journal.create(tmp_path / "runs")
    return StepContext(
        run_id=journal.run_id, run_dir=journal.directory, journal=journal, config=Config(),
        report=RunReport(journal.run_id, "test"), shared=SharedState(cloud=cloud),  # type: ignore[arg-type]
        deadline=time.monotonic() + 60,
    )


def cleanup(ctx: StepContext) -> None:
    while ctx.shared.cleanups:
        ctx.shared.cleanups.pop().action()


def test_the_image_admin_user_gets_a_fresh_secret_password_made_unusable_at_the_end(tmp_path: Path) -> None:
    cloud = FakeCloud({"hw_qemu_guest_agent": "True", "os_admin_user": "ubuntu"})
    ctx = context(tmp_path, cloud)
    outputs = set_password(ctx, SetPasswordParams(server=SERVER.id))
    assert outputs["user"] == "ubuntu"
    password = outputs["password"]
    assert isinstance(password, Secret)
    assert len(password.reveal()) >= 20
    assert cloud.passwords == [password]
    cleanup(ctx)  # the lock step never ran: Nova sets it once more, to a value nobody keeps
    assert len(cloud.passwords) == 2
    assert cloud.passwords[1].reveal() != password.reveal()
    report = json.dumps(ctx.report.to_json())
    assert password.reveal() not in report
    assert cloud.passwords[1].reveal() not in report
    assert "to a random value nobody keeps" in ctx.report.vm_changes[-1]


@pytest.mark.parametrize(("properties", "shown"), [
    ({"hw_qemu_guest_agent": "False", "os_admin_user": "ubuntu"}, "'False'"),
    ({"os_admin_user": "ubuntu"}, "'not set'"),
])
def test_an_image_without_the_agent_is_refused_before_any_password_as_not_possible(
    tmp_path: Path, properties: dict[str, str], shown: str,
) -> None:
    cloud = FakeCloud(properties)
    ctx = context(tmp_path, cloud)
    with pytest.raises(NotPossible, match=f"hw_qemu_guest_agent is {shown}") as refused:
        set_password(ctx, SetPasswordParams(server=SERVER.id))
    assert cloud.passwords == []
    assert ctx.shared.cleanups == []
    # restore-access.yaml's `choose:` then moves on to the next route, this reason in the report.
    assert routes.not_possible(refused.value)


@pytest.mark.parametrize("status", [409, 501])
def test_a_password_nova_refused_leaves_nothing_to_undo(tmp_path: Path, status: int) -> None:
    cloud = FakeCloud(None, [CloudError("refused", status_code=status)])
    ctx = context(tmp_path, cloud)
    with pytest.raises(CloudError) as refused:
        set_password(ctx, SetPasswordParams(server=SERVER.id))
    assert routes.not_possible(refused.value)
    assert "no image properties to read" in ctx.report.notes[0]
    cleanup(ctx)
    assert cloud.passwords == []
    assert ctx.report.vm_changes == []


def test_a_silent_agent_at_the_end_is_asked_again_then_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    cloud = FakeCloud({"hw_qemu_guest_agent": "yes"})
    ctx = context(tmp_path, cloud)
    assert set_password(ctx, SetPasswordParams(server=SERVER.id))["user"] == "root"
    cloud.failures = [CloudError("silent", status_code=501)] * 3
    with pytest.raises(CloudError, match="may still be usable \\(lock it: `passwd -l root`\\)"):
        cleanup(ctx)
    assert len(cloud.passwords) == 1


# --- the lock typed in the install's own command (authorized_keys.install lock_password) -------------


def test_a_lock_seen_in_the_install_command_calls_the_net_off_and_nothing_more_is_typed(tmp_path: Path) -> None:
    cloud = FakeCloud({"hw_qemu_guest_agent": "True", "os_admin_user": "ubuntu"})
    ctx = context(tmp_path, cloud)
    set_password(ctx, SetPasswordParams(server=SERVER.id))
    password_lock_seen(ctx, "ubuntu", LockExitCode.OK)
    # No console in this context: lock_password would fail if it typed anything.
    assert lock_password(ctx, LockPasswordParams(server=SERVER.id, user="ubuntu", status=0)) == {
        "method": "passwd -l"}
    cleanup(ctx)
    assert len(cloud.passwords) == 1
    assert ctx.report.vm_changes[-1] == (
        "locked the password of ubuntu again on the console (passwd -l): no usable password is left")


def test_a_lock_the_install_command_could_not_do_is_made_unusable_through_nova(tmp_path: Path) -> None:
    cloud = FakeCloud({"hw_qemu_guest_agent": "True", "os_admin_user": "ubuntu"})
    ctx = context(tmp_path, cloud)
    first = set_password(ctx, SetPasswordParams(server=SERVER.id))["password"]
    password_lock_seen(ctx, "ubuntu", LockExitCode.NOT_PRIVILEGED)
    assert ctx.report.notes[-1].startswith("the password of ubuntu was not locked on the console: the console's shell")
    assert lock_password(ctx, LockPasswordParams(server=SERVER.id, user="ubuntu", status=10)) == {
        "method": "changePassword"}
    assert len(cloud.passwords) == 2
    assert cloud.passwords[1].reveal() != first.reveal()
    cleanup(ctx)
    assert len(cloud.passwords) == 2  # settled: not set a third time


def test_a_dry_run_shows_the_lock_typed_with_the_install_before_set_password_names_the_user() -> None:
    from recovery.steps.authorized_keys import InstallParams, preview

    lines = preview(InstallParams(key="<steps.key.outputs.public_key>", as_user="debian",
                                  lock_password="<steps.set_password.outputs.user>"))
    assert "u=debian" in lines
    assert "a=root" in lines  # the stand-in for the user cloud.set_password names at run time
    assert "printf 'RCV-%s password_lock=%s\\n' \"$n\" \"$?\"" in lines
