"""authorized_keys.remove typed into the lab's real serial console: a stolen key leaves every file sshd
reads the user's keys from, not only ~/.ssh/authorized_keys.

The lab user is a real account and the console a real login shell, so the typed report learns the
files the way it does on a VM: this machine's sshd_config read as that user (no root, no sudo), and
sshd's default (`.ssh/authorized_keys .ssh/authorized_keys2`) where it sets nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from recovery import lab
from recovery.guest import blob_fingerprints, key_blob
from recovery.ssh.keys import generate_keypair
from tests.e2e.conftest import recovery

pytestmark = pytest.mark.lab

PLAYBOOK = """\
name: remove-through-console
inputs:
  console_url: {type: string, sensitive: true}
  user: {type: string}
  stolen: {type: string}
secrets:
  console_password: {env: RECOVERY_CONSOLE_PASSWORD}
steps:
  - id: console
    uses: console.open
    with: {url: "{{ inputs.console_url }}", kind: serial}
  - id: login
    uses: console.login
    with: {user: "{{ inputs.user }}", password: "{{ secrets.console_password }}"}
  - id: remove
    uses: authorized_keys.remove
    with: {keys: "{{ inputs.stolen }}"}
"""


def test_a_stolen_key_leaves_authorized_keys2_too_when_typed_into_the_console(start_lab, workdir: Path) -> None:
    stolen = generate_keypair(workdir / "stolen", comment="stolen@laptop")
    info = start_lab(seed=lab.Seed(extra_lines=(stolen.public_line,)))
    second = info.home / ".ssh" / "authorized_keys2"
    second.write_text(f"# kept\n{stolen.public_line}\n")
    owner = info.authorized_keys.stat()
    os.chown(second, owner.st_uid, owner.st_gid)
    playbook = workdir / "remove.yaml"
    playbook.write_text(PLAYBOOK)

    result = recovery(
        "run", str(playbook), "-e", f"console_url={info.console_url}", "-e", f"user={info.user}",
        "-e", f"stolen={stolen.public_line}", "--journal", str(workdir / "runs"),
        env={"RECOVERY_CONSOLE_PASSWORD": info.console_password().reveal()},
    )

    assert result.code == 0, result.stderr
    assert (lab.read_authorized_keys(info) or b"").decode() == f"{info.old_public_key}\n"
    assert second.read_text() == "# kept\n"
    report = json.loads((workdir / "runs" / result.run_id / "report.json").read_text())
    (typed,) = report["typed"]  # the report script and a removal per file, in one journal file
    assert Path(typed).read_text().count("<<'") == 3
    removal = report["authorized_keys"]["removal"]
    assert removal["status"] == "removed"
    assert [entry["file"] for entry in removal["files"]] == [str(info.authorized_keys), str(second)]
    fingerprint = blob_fingerprints(key_blob(stolen.public_line))[0]
    assert removal["removed"] == [f"{fingerprint} stolen@laptop"] * 2
