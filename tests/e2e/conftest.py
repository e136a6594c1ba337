"""End to end: whole playbooks through `python -m recovery`, against the real lab."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from recovery import lab
from tests.agentvm.vm import SavedVm, saved_vm

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "playbooks" / "restore-access-serial.yaml"
VNC_PLAYBOOK = ROOT / "playbooks" / "restore-access-vnc.yaml"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def run_id(self) -> str:
        for line in self.stderr.splitlines():
            if line.startswith("run ") and ": journal " in line:
                return line.split()[1].rstrip(":")
        raise AssertionError(f"no run id in:\n{self.stderr}")


@pytest.fixture(scope="session")
def saved_agent_vm() -> Iterator[SavedVm]:
    """The guest-agent test VM (tests/agentvm/vm.py), booted once for the whole session and saved: each
    test resumes its own copy (~1.5 s) instead of booting one (~30 s)."""
    with saved_vm() as machine:
        yield machine


@pytest.fixture
def workdir() -> Iterator[Path]:
    """Under /tmp and world-traversable: the lab user must reach its home through it."""
    directory = Path(tempfile.mkdtemp(prefix="rcv-e2e-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def start_lab(workdir: Path) -> Iterator[Callable[..., lab.LabInfo]]:
    started: list[Path] = []

    def start(seed: lab.Seed | None = None, **options: Any) -> lab.LabInfo:
        """`options` go to `lab.up` as they are (console="vnc", password=...)."""
        directory = workdir / f"lab{len(started)}"
        started.append(directory)
        return lab.up(directory, seed=seed or lab.Seed(), **options)

    yield start
    for directory in started:
        lab.down(directory)


def recovery(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Result:
    completed = subprocess.run(
        [sys.executable, "-m", "recovery", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        check=False,
    )
    return Result(completed.returncode, completed.stdout, completed.stderr)


@pytest.fixture
def recover(workdir: Path) -> Callable[..., Result]:
    """Run a playbook (the serial one unless told) against a lab, with keys and journal under `workdir`."""

    def run(
        info: lab.LabInfo,
        *extra: str,
        console_url: str | None = None,
        password: str | None = None,
        playbook: Path = PLAYBOOK,
    ) -> Result:
        return recovery(
            "run",
            str(playbook),
            "-e", f"console_url={console_url or info.console_url}",
            "-e", f"ssh_host={info.ssh_host}",
            "-e", f"ssh_port={info.ssh_port}",
            "-e", f"user={info.user}",
            "-e", f"host_key_fingerprint={info.host_key_fingerprint}",
            "--journal", str(workdir / "runs"),
            *extra,
            env={
                "RECOVERY_CONSOLE_PASSWORD": password or info.console_password().reveal(),
                "RECOVERY_KEYS_DIR": str(workdir / "keys"),
            },
        )

    return run


def host_key_fingerprints(info: lab.LabInfo) -> str:
    """The block cloud-init prints to the console log, which a cloud's console log shows us."""
    return (
        "-----BEGIN SSH HOST KEY FINGERPRINTS-----\n"
        f"256 {info.host_key_fingerprint} root@web-1 (ED25519)\n"
        "-----END SSH HOST KEY FINGERPRINTS-----\n"
    )


def assert_screenshots(report: dict) -> list[bytes]:
    """The run's screenshots (before and after login, after the install), each checked to be a PNG."""
    moments = [entry.split(":", 1)[0] for entry in report["screenshots"]]
    assert moments == ["before-login", "after-login", "after-install"]
    pngs = [Path(entry.split(": ", 1)[1]).read_bytes() for entry in report["screenshots"]]
    for png in pngs:
        assert png.startswith(PNG_MAGIC)
    return pngs
