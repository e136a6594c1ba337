"""Whole recoveries through the CLI against the real lab: success, edge cases of ~/.ssh, faults."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from recovery import lab
from tests.e2e.conftest import PLAYBOOK, ROOT, VNC_PLAYBOOK, Result, recovery
from tests.e2e.faults import CuttingProxy

pytestmark = pytest.mark.lab

Recover = Callable[..., Result]


def report_of(workdir: Path, result: Result) -> dict:
    return json.loads((workdir / "runs" / result.run_id / "report.json").read_text())


def new_key_line(workdir: Path, result: Result) -> str:
    return str(report_of(workdir, result)["keys"][0]["public_key"])


def key_lines(info: lab.LabInfo) -> list[str]:
    content = lab.read_authorized_keys(info) or b""
    return content.decode().splitlines()


def accepted_fingerprints(info: lab.LabInfo) -> list[str]:
    """sshd (LogLevel VERBOSE) names the key of every accepted login."""
    return re.findall(r"Accepted publickey for \S+ from \S+ port \d+ ssh2: \S+ (SHA256:\S+)", info.sshd_log.read_text())


def assert_recovered(info: lab.LabInfo, workdir: Path, result: Result) -> str:
    assert result.code == 0, result.stderr
    report = report_of(workdir, result)
    assert report["status"] == "succeeded"
    new_key = new_key_line(workdir, result)
    lines = key_lines(info)
    assert lines.count(new_key) == 1
    assert lines[0] == info.old_public_key, "the old key line must survive untouched"
    assert report["keys"][0]["sha256"] in accepted_fingerprints(info), "sshd must have accepted the new key"
    modes = lab.ssh_paths_modes(info)
    assert stat.S_IMODE(modes["ssh_dir"] or 0) == 0o700
    assert stat.S_IMODE(modes["authorized_keys"] or 0) == 0o600
    return new_key


def test_inline_recovery_proves_the_new_key_and_keeps_the_old_one(start_lab, recover: Recover, workdir: Path) -> None:
    info = start_lab()
    incident = workdir / "incident" / "report.md"
    result = recover(info, "-e", f"report={incident}")
    assert_recovered(info, workdir, result)
    report = report_of(workdir, result)
    assert "Proof of access" in incident.read_text()
    assert report["proof"]["remote_user"] == info.user
    assert report["proof"]["host_key_trust"] == "pinned"
    assert "SUCCEEDED" in result.stdout
    assert f"report: {workdir / 'runs' / result.run_id}/report.md" in result.stderr  # the success line names it
    # What was typed is kept in the journal (masked) and linked from the report, not pasted into it.
    (typed,) = report["typed"]
    assert "RECOVERY_SCRIPT" in Path(typed).read_text()
    assert "RECOVERY_SCRIPT" not in incident.read_text()
    assert Path(report["keys"][0]["private_key_path"]).is_absolute()
    journal = workdir / "runs" / result.run_id
    for name in ("run.json", "events.jsonl", "transcript.log", "report.json", "report.md"):
        assert (journal / name).stat().st_mode & 0o077 == 0, name


def test_http_publishing_serves_the_key_once_and_withdraws_it(start_lab, recover: Recover, workdir: Path) -> None:
    info = start_lab()
    result = recover(info, "-e", "publish=http")
    assert_recovered(info, workdir, result)
    report = report_of(workdir, result)
    assert len(report["published"]) == 1
    assert report["withdrawn"] == [report["published"][0].split(" (expires")[0]]
    assert "***" in report["published"][0]
    assert "closed the http publisher" in report["rolled_back"]
    transcript = (workdir / "runs" / result.run_id / "transcript.log").read_text()
    assert "source=wget" in transcript


@pytest.mark.parametrize(
    "seed",
    [
        lab.Seed(trailing_newline=False, extra_lines=("# a comment", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI dup")),
        lab.Seed(ssh_dir=False),
        lab.Seed(ssh_dir_mode=0o777),
    ],
    ids=["no-trailing-newline", "no-ssh-dir", "ssh-dir-0777"],
)
def test_awkward_authorized_keys_are_repaired_without_losing_a_line(
    seed: lab.Seed, start_lab, recover: Recover, workdir: Path
) -> None:
    info = start_lab(seed=seed)
    before = key_lines(info) if seed.ssh_dir else []
    result = recover(info)
    if not seed.ssh_dir:
        assert result.code == 0, result.stderr
        assert key_lines(info) == [new_key_line(workdir, result)]
        return
    new_key = assert_recovered(info, workdir, result)
    assert key_lines(info) == [*before, new_key]


def test_a_wrong_password_stops_the_run_and_types_nothing_after_it(start_lab, recover: Recover, workdir: Path) -> None:
    info = start_lab()
    before = lab.read_authorized_keys(info)
    result = recover(info, password="not-the-password")
    assert result.code == 1
    assert "Login incorrect" in result.stderr
    report = report_of(workdir, result)
    assert report["failed_step"] == "login"
    assert lab.read_authorized_keys(info) == before
    transcript = (workdir / "runs" / result.run_id / "transcript.log").read_text()
    typed = re.findall(r"^>>> (.*)$", transcript, re.MULTILINE)
    assert typed[-1] == "<password>", typed
    assert "not-the-password" not in transcript + result.stdout + result.stderr


def test_a_refused_console_is_a_clear_error(start_lab, recover: Recover) -> None:
    info = start_lab()
    lab.stop_process(info, "websockify")
    result = recover(info)
    assert result.code == 1
    assert "refused the connection" in result.stderr
    assert info.console_token not in result.stderr + result.stdout


def test_a_rejected_token_is_a_clear_error(start_lab, recover: Recover) -> None:
    info = start_lab()
    wrong = info.console_url.replace(info.console_token, "not-a-valid-token")
    result = recover(info, console_url=wrong)
    assert result.code == 1
    assert "token was rejected or has expired" in result.stderr
    assert "not-a-valid-token" not in result.stderr + result.stdout


def test_sshd_down_at_verify_fails_then_resume_finishes_with_the_key_once(
    start_lab, recover: Recover, workdir: Path
) -> None:
    info = start_lab()
    lab.stop_process(info, "sshd")
    failed = recover(info)
    assert failed.code == 1
    report = report_of(workdir, failed)
    assert report["failed_step"] == "verify"
    assert "refused" in report["error"]
    assert any("appended the new key" in change for change in report["vm_changes"])
    assert key_lines(info)[0] == info.old_public_key
    info = lab.start_sshd(info)
    resumed = recover(info, "--resume", failed.run_id)
    assert resumed.code == 0, resumed.stderr
    new_key = new_key_line(workdir, resumed)
    assert key_lines(info).count(new_key) == 1
    statuses = {step["id"]: step["status"] for step in report_of(workdir, resumed)["timeline"]}
    assert statuses["key"] == "resumed"
    assert statuses["install"] == "succeeded"
    assert any("already in authorized_keys" in c for c in report_of(workdir, resumed)["vm_changes"])


def test_a_console_cut_mid_injection_changes_nothing_and_resume_finishes(
    start_lab, recover: Recover, workdir: Path
) -> None:
    info = start_lab()
    before = lab.read_authorized_keys(info)
    with CuttingProxy(info.serial_port, trigger=b"RECOVERY_SCRIPT_", extra=300) as proxy:
        lab.replace_console_target(info, "127.0.0.1", proxy.port)
        failed = recover(info)
        assert proxy.cut_done.is_set()
        assert failed.code == 1
        assert report_of(workdir, failed)["failed_step"] == "install"
        assert "closed the connection" in failed.stderr
        assert lab.read_authorized_keys(info) == before, "a half-typed script must not run"
        resumed = recover(info, "--resume", failed.run_id)
    assert resumed.code == 0, resumed.stderr
    assert key_lines(info).count(new_key_line(workdir, resumed)) == 1
    assert new_key_line(workdir, resumed) == new_key_line(workdir, failed)


def test_resume_needs_the_sensitive_console_url_again(start_lab, recover: Recover, workdir: Path) -> None:
    info = start_lab()
    lab.stop_process(info, "websockify")
    failed = recover(info)
    result = recovery("run", str(PLAYBOOK), "--journal", str(workdir / "runs"), "--resume", failed.run_id)
    assert result.code == 2
    assert "input 'console_url' is sensitive and was not saved; give it again" in result.stderr


def test_ctrl_c_withdraws_the_published_key_and_exits_130(start_lab, workdir: Path) -> None:
    info = start_lab()
    silent = socket.create_server(("127.0.0.1", 0))  # a serial port that never prints a prompt
    lab.replace_console_target(info, "127.0.0.1", silent.getsockname()[1])
    process = subprocess.Popen(
        [sys.executable, "-m", "recovery", "run", str(PLAYBOOK), "--journal", str(workdir / "runs"),
         "-e", f"console_url={info.console_url}", "-e", f"ssh_host={info.ssh_host}", "-e", f"user={info.user}",
         "-e", "publish=http", "-e", "trust_first_use=true"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "RECOVERY_CONSOLE_PASSWORD": "unused-here", "RECOVERY_KEYS_DIR": str(workdir / "keys")},
    )
    try:
        assert process.stderr is not None
        seen = []
        for line in process.stderr:
            seen.append(line)
            if "] login:" in line:
                break
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=30)
    finally:
        process.kill()
        silent.close()
    stderr = "".join(seen) + rest
    assert process.returncode == 130, stderr
    result = Result(130, "", stderr)
    report = report_of(workdir, result)
    assert report["status"] == "interrupted"
    assert len(report["withdrawn"]) == 1
    assert f"--resume {result.run_id}" in stderr


def test_under_umask_000_everything_a_recovery_creates_is_private(start_lab, workdir: Path) -> None:
    """A container shell's `umask 000`: journal, screenshots, ~/.ssh, the key directories, the report file."""
    info = start_lab(console="vnc")
    home = workdir / "home"
    home.mkdir(mode=0o755)
    incident = workdir / "incident" / "INC-1"
    completed = subprocess.run(
        ["sh", "-c", 'umask 000 && exec "$@"', "sh", sys.executable, "-m", "recovery", "run", str(VNC_PLAYBOOK),
         "-e", f"console_url={info.vnc_console_url}", "-e", f"ssh_host={info.ssh_host}",
         "-e", f"ssh_port={info.ssh_port}", "-e", f"user={info.user}",
         "-e", f"host_key_fingerprint={info.host_key_fingerprint}", "-e", f"report={incident / 'report.md'}"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=False,
        env={**os.environ, "HOME": str(home), "XDG_STATE_HOME": "", "XDG_CONFIG_HOME": "",
             "RECOVERY_CONSOLE_PASSWORD": info.console_password().reveal()},
    )
    result = Result(completed.returncode, completed.stdout, completed.stderr)
    assert result.code == 0, result.stderr
    journal = home / ".local" / "state" / "recovery" / "runs" / result.run_id
    report = json.loads((journal / "report.json").read_text())
    assert report["screenshots"], "the VNC run took screenshots"
    key = Path(report["keys"][0]["private_key_path"])
    assert key.is_relative_to(home / ".ssh" / "recovery")
    directories = [home / ".ssh", key.parent.parent, key.parent, home / ".local", journal.parent, journal,
                   workdir / "incident", incident]
    for directory in directories:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    for path in [*journal.rglob("*"), incident / "report.md", key]:
        assert path.stat().st_mode & 0o077 == 0, path
    assert stat.S_IMODE(key.with_name(key.name + ".pub").stat().st_mode) == 0o644


def test_at_vvv_no_secret_reaches_the_terminal_or_the_journal(start_lab, workdir: Path) -> None:
    """The console token, the password and the one-shot HTTP URL's token, with every library logging."""
    info = start_lab()
    result = recovery(
        "-vvv", "run", str(PLAYBOOK), "-e", f"ssh_host={info.ssh_host}", "-e", f"ssh_port={info.ssh_port}",
        "-e", f"user={info.user}", "-e", f"host_key_fingerprint={info.host_key_fingerprint}", "-e", "publish=http",
        "--journal", str(workdir / "runs"),
        env={"RECOVERY_CONSOLE_URL": info.console_url, "RECOVERY_KEYS_DIR": str(workdir / "keys"),
             "RECOVERY_CONSOLE_PASSWORD": info.console_password().reveal()},
    )
    assert_recovered(info, workdir, result)
    journal = workdir / "runs" / result.run_id
    everything = result.stdout + result.stderr + "".join(
        path.read_text(errors="replace") for path in journal.rglob("*") if path.is_file()
    )
    assert "DEBUG paramiko" in result.stderr, "-vvv logs the libraries too"
    assert info.console_token not in everything
    assert info.console_password().reveal() not in everything
    served = re.findall(r"http://127\.0\.0\.1:\d+/([^\s'\"]+)", everything)
    assert served, "the one-shot URL is mentioned (masked)"
    assert set(served) == {"***"}, "the one-shot URL's token must be masked everywhere"
