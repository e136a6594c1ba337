"""agent.install against a fake guest agent: the real install script runs here, as the agent would run it.

The fake is registered in the agent registry under `fake://` (the way a third-party driver would
be). Its `exec` runs the command this machine's /bin/sh with HOME set to a temp home, standing in
for the switch to the user in the guest (`recovery.guest.as_user_argv`, tested in test_as_user.py);
its guest-ssh-* commands behave as qemu-ga 7.2's do (lines joined with no final newline). The real
qemu-ga is tested in tests/e2e/test_agent_recovery.py.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from recovery import agent as agents
from recovery.agent import ExecResult
from recovery.engine.config import Config
from recovery.engine.context import SharedState, StepContext
from recovery.engine.journal import Journal
from recovery.engine.playbook import load_playbook, resolve_inputs
from recovery.engine.preflight import PreflightError, check
from recovery.engine.report import RunReport
from recovery.errors import AgentError, GuestCommandError
from recovery.guest import as_user_argv
from recovery.ssh.keys import generate_keypair
from recovery.steps.agent import AgentInstallParams, install

ROOT = Path(__file__).resolve().parents[2]
OLD = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl old"


@dataclass
class FakeGuest:
    home: Path
    user: str = "debian"
    blocked: set[str] = field(default_factory=set)
    drops_keys: bool = False
    argv: list[list[str]] = field(default_factory=list)
    closed: int = 0

    @property
    def keys_file(self) -> Path:
        return self.home / ".ssh" / "authorized_keys"

    def _refuse(self, command: str) -> None:
        if command in self.blocked:
            raise AgentError(f"fake refuses {command}", command=command, blocked=True)

    def exec(self, argv: Sequence[str], *, stdin: bytes = b"", timeout: float) -> ExecResult:
        self._refuse("guest-exec")
        self.argv.append(list(argv))
        user = argv[-1]
        assert list(argv) == as_user_argv(user)
        if user != self.user:
            return ExecResult(1, b"", f"runuser: user {user} does not exist\n".encode())
        done = subprocess.run(["/bin/sh"], input=stdin, capture_output=True, timeout=timeout, check=False,
                              env={"HOME": str(self.home), "PATH": os.environ["PATH"]})
        return ExecResult(done.returncode, done.stdout, done.stderr)

    def get_authorized_keys(self, user: str, *, timeout: float) -> list[str]:
        if not self.keys_file.exists():
            return []
        return [line for line in self.keys_file.read_text().split("\n") if line]

    def add_authorized_keys(self, user: str, keys: Sequence[str], *, timeout: float) -> None:
        present = [] if self.drops_keys else self.get_authorized_keys(user, timeout=timeout)
        self.keys_file.parent.mkdir(mode=0o700, exist_ok=True)
        self.keys_file.write_text("\n".join([*present, *(key for key in keys if key not in present)]))

    def append_newline_if_missing(self, user: str, *, timeout: float) -> bool | None:
        if "guest-file-open" in self.blocked:
            return None  # as QgaAgent answers where the file commands are blocked
        if self.keys_file.read_bytes().endswith(b"\n"):
            return False
        with self.keys_file.open("a") as file:
            file.write("\n")
        return True

    def close(self) -> None:
        self.closed += 1


GUEST: list[FakeGuest] = []


class FakeAgentDriver:
    @staticmethod
    def url_problem(url: str) -> str | None:
        return None

    @classmethod
    def from_url(cls, url: str, *, token: object = None) -> FakeGuest:
        return GUEST[0]


@pytest.fixture
def guest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGuest]:
    monkeypatch.setitem(agents.AGENTS, "fake", f"{__name__}:FakeAgentDriver")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    (home / ".ssh" / "authorized_keys").write_text(OLD + "\n")
    GUEST[:] = [FakeGuest(home)]
    yield GUEST[0]
    GUEST.clear()


def context(tmp_path: Path) -> StepContext:
    journal = Journal.create(tmp_path / "runs")
    return StepContext(
        run_id=journal.run_id, run_dir=journal.directory, journal=journal, config=Config(),
        report=RunReport(journal.run_id, "test"), shared=SharedState(), deadline=time.monotonic() + 60,
    )


def new_key(tmp_path: Path) -> str:
    return generate_keypair(tmp_path / "id_new", comment="new").public_line


def params(key: str, user: str = "debian") -> AgentInstallParams:
    return AgentInstallParams(agent="fake://vm", user=user, key=key)


def test_the_install_script_runs_as_the_user_and_its_facts_reach_the_report(
    guest: FakeGuest, tmp_path: Path
) -> None:
    ctx = context(tmp_path)
    key = new_key(tmp_path)
    outputs = install(ctx, params(key))
    assert outputs["added"] is True
    assert outputs["method"] == "guest-exec"
    assert guest.argv == [as_user_argv("debian")]
    assert guest.keys_file.read_text() == f"{OLD}\n{key}\n"
    assert "appended the new key to ~/.ssh/authorized_keys" in ctx.report.vm_changes
    assert ctx.report.authorized_keys["before"]["lines"] == 1
    assert ctx.report.authorized_keys["after"]["lines"] == 2
    assert ctx.report.typed == []
    assert ctx.report.notes[0].startswith("route: the guest agent (fake://vm) ran the install script as debian")
    for cleanup in ctx.shared.cleanups:
        cleanup.action()
    assert guest.closed == 1


def test_without_facts_the_exit_status_decides(guest: FakeGuest, tmp_path: Path) -> None:
    ctx = context(tmp_path)
    key = new_key(tmp_path)
    outputs = install(ctx, AgentInstallParams(agent="fake://vm", user="debian", key=key, facts=False))
    assert outputs == {"added": None, "backup": None, "before_sha256": None, "after_sha256": None,
                       "method": "guest-exec"}
    assert guest.keys_file.read_text() == f"{OLD}\n{key}\n"
    assert ctx.report.vm_changes == ["the key install script exited 0 (no facts asked for): proven by the SSH login"]
    with pytest.raises(GuestCommandError, match="exit 1, stderr: runuser: user nosuch does not exist"):
        install(ctx, AgentInstallParams(agent="fake://vm", user="nosuch", key=key, facts=False))


def test_the_script_runs_with_a_users_path(guest: FakeGuest, tmp_path: Path) -> None:
    """Root's sbin is left out: `sshd -T` cannot run as the user, and trying costs ~0.5 s on a slow guest."""
    seen: list[bytes] = []
    real_exec = guest.exec

    def spy(argv: Sequence[str], *, stdin: bytes = b"", timeout: float) -> ExecResult:
        seen.append(stdin)
        return real_exec(argv, stdin=stdin, timeout=timeout)

    guest.exec = spy  # type: ignore[method-assign]
    install(context(tmp_path), params(new_key(tmp_path)))
    assert seen[0].startswith(b"PATH=/usr/local/bin:/usr/bin:/bin; export PATH\n{\n")


def test_a_file_without_a_final_newline_gets_one_before_the_key(guest: FakeGuest, tmp_path: Path) -> None:
    guest.keys_file.write_text(OLD)
    ctx = context(tmp_path)
    key = new_key(tmp_path)
    install(ctx, params(key))
    assert guest.keys_file.read_text() == f"{OLD}\n{key}\n"
    assert "added the missing final newline to authorized_keys" in ctx.report.vm_changes


def test_a_user_the_vm_does_not_have_is_named_in_the_error(guest: FakeGuest, tmp_path: Path) -> None:
    with pytest.raises(GuestCommandError, match="is 'nosuch' a user on the VM") as caught:
        install(context(tmp_path), params(new_key(tmp_path), user="nosuch"))
    assert "runuser: user nosuch does not exist" in str(caught.value)
    assert guest.keys_file.read_text() == OLD + "\n"


def test_a_failing_script_is_explained(guest: FakeGuest, tmp_path: Path) -> None:
    (guest.home / ".ssh" / "authorized_keys").unlink()
    (guest.home / ".ssh").rmdir()
    (guest.home / ".ssh").write_text("not a directory")
    with pytest.raises(GuestCommandError, match=r"failed \(exit 10\): HOME is unset or missing, or ~/.ssh could not"):
        install(context(tmp_path), params(new_key(tmp_path)))


def test_where_guest_exec_is_blocked_the_ssh_command_adds_the_key_and_the_newline(
    guest: FakeGuest, tmp_path: Path
) -> None:
    guest.blocked = {"guest-exec"}
    ctx = context(tmp_path)
    key = new_key(tmp_path)
    outputs = install(ctx, params(key))
    assert outputs["method"] == "guest-ssh-add-authorized-keys"
    assert outputs["added"] is True
    assert guest.keys_file.read_text() == f"{OLD}\n{key}\n"
    assert "added the final newline qemu-ga leaves out, through guest-file-*" in ctx.report.vm_changes
    assert ctx.report.authorized_keys["after"]["lines"] == 2
    assert "blocks guest-exec" in ctx.report.notes[0]


def test_where_file_commands_are_blocked_too_the_missing_newline_is_reported(
    guest: FakeGuest, tmp_path: Path
) -> None:
    guest.blocked = {"guest-exec", "guest-file-open"}
    ctx = context(tmp_path)
    key = new_key(tmp_path)
    install(ctx, params(key))
    assert guest.keys_file.read_text() == f"{OLD}\n{key}"
    assert any("may now end without a newline" in note for note in ctx.report.notes)


def test_a_key_already_there_is_not_added_again(guest: FakeGuest, tmp_path: Path) -> None:
    guest.blocked = {"guest-exec"}
    key = new_key(tmp_path)
    guest.keys_file.write_text(f"{OLD}\n{key}\n")
    outputs = install(context(tmp_path), params(key))
    assert outputs["added"] is False
    assert guest.keys_file.read_text() == f"{OLD}\n{key}\n"


def test_an_agent_that_loses_keys_on_the_fallback_fails_loudly(guest: FakeGuest, tmp_path: Path) -> None:
    guest.blocked = {"guest-exec"}
    guest.drops_keys = True
    with pytest.raises(AgentError, match=r"dropped 1 key\(s\) from debian's authorized_keys"):
        install(context(tmp_path), params(new_key(tmp_path)))


def test_other_agent_errors_do_not_fall_back(guest: FakeGuest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def silent(*args: object, **kwargs: object) -> ExecResult:
        raise AgentError("the guest agent did not answer guest-exec in time", command="guest-exec")

    monkeypatch.setattr(guest, "exec", silent)
    with pytest.raises(AgentError, match="did not answer guest-exec in time"):
        install(context(tmp_path), params(new_key(tmp_path)))
    assert guest.keys_file.read_text() == OLD + "\n"


@pytest.mark.parametrize(
    ("agent", "user", "problem"),
    [
        ("", "debian", "no guest agent to talk to: give -e agent=unix:///path/to/qga.sock"),
        ("vnc://127.0.0.1:5900", "debian", "vnc:// is not a guest agent we can reach"),
        ("unix://relative/qga.sock", "debian", "three slashes"),
        ("unix:///run/qga.sock", "-root", "starts with '-'"),
        ("proxmox://pve1.example/pve/100", "debian", "a proxmox:// agent needs an API token"),
    ],
)
def test_the_preflight_refuses_before_a_key_is_made(agent: str, user: str, problem: str) -> None:
    playbook = load_playbook(ROOT / "playbooks" / "restore-access-agent.yaml")
    inputs = resolve_inputs(playbook, {"agent": agent, "user": user, "ssh_host": "127.0.0.1",
                                       "trust_first_use": "true"})
    with pytest.raises(PreflightError, match="step install") as caught:
        check(playbook, inputs, {}, Config())
    assert problem in str(caught.value)
    assert len(caught.value.problems) == 1, caught.value.problems


def test_the_dry_run_shows_the_command_and_the_script_it_would_feed_it() -> None:
    from recovery.steps.agent import preview

    lines = preview(AgentInstallParams(agent="unix:///run/qga.sock", user="debian", key="<not made yet>"))
    assert lines[0].startswith("guest-exec through unix:///run/qga.sock: /bin/sh -c 'u=$1; while ")
    assert lines[0].endswith("exec su -s /bin/sh \"$u\" 3<&-' sh debian <<script")
    assert lines[1] == "PATH=/usr/local/bin:/usr/bin:/bin; export PATH"
    assert lines[2] == "{"
    assert lines[-1] == "} </dev/null"
    assert any(line.startswith("k='ssh-ed25519 ") for line in lines)  # a stand-in key of the real shape
