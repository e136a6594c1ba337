"""The rescue-mode route (restore-access-rescue.yaml) through the test Nova: start to proven login.

    .venv/bin/python benchmarks/rescue_route.py [--runs 2]

The test cloud is real Nova 34 whose fake driver runs real QEMU (tests/cloud/rescue_bed.py): rescue
boots a busybox rescue system from a rescue disk labelled like the server's root, the server's own
disk (an overlay on the Debian agent image, .cache/agent-vm) attached second; unrescue cold-boots
that disk. Each run is the whole `python -m recovery run playbooks/restore-access-rescue.yaml`,
ending in the SSH login with the image's host key pinned. Printed per run: the wall time (interpreter
start included), the boots it took (always two: the rescue system, then the server), and the seconds
of the steps that wait for them. Software emulation (no KVM here): the boots are most of the time.
Each run starts from a fresh server disk and a fresh Nova, so runs do not see each other's keys.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.peers import require_programs
from recovery.lab.processes import free_port
from tests.cloud.nova_fixture import NovaServerSpec, running_nova
from tests.cloud.rescue_bed import RESCUE_USER, prepare, stop_leftovers

ROOT = Path(__file__).resolve().parents[1]
PLAYBOOK = ROOT / "playbooks" / "restore-access-rescue.yaml"
RESCUE_IMAGE = "a2459075-d96c-40d5-893e-577ff92e721c"  # one of the Glance fixture's images
PASSWORD = "rescue-Passw0rd"
WAITS = ("rescue", "rescue_booted", "login", "root_disk", "install", "unrescue", "verify")


def one_run(number: int) -> int:
    scratch = Path(tempfile.mkdtemp(prefix="rcv-rescue-bench-"))
    bed = prepare(scratch / "machines", ssh_port=free_port(), rescue_serial_port=free_port(), password=PASSWORD)
    try:
        with running_nova(None, None, [NovaServerSpec("web-1", fixed_ip="10.0.0.5", floating_ip="127.0.0.1")],
                          rescue_spec=bed.spec_path) as nova:
            nova.clouds_yaml(scratch / "clouds.yaml", "bench")
            report = scratch / "report.json"
            argv = [sys.executable, "-m", "recovery", "run", str(PLAYBOOK), "--cloud", "bench",
                    "--journal", f"{scratch}/runs", "-e", "server=web-1", "-e", "user=debian",
                    "-e", f"ssh_port={bed.ssh_port}", "-e", f"host_key_fingerprint={bed.host_key}",
                    "-e", f"rescue_image={RESCUE_IMAGE}", "-e", f"rescue_user={RESCUE_USER}",
                    "-e", "allow_reboot=true", "-e", f"key_path={scratch}/id_new", "-e", f"report={report}"]
            env = {"OS_CLIENT_CONFIG_FILE": str(scratch / "clouds.yaml"), "RECOVERY_RESCUE_PASSWORD": PASSWORD}
            started = time.monotonic()
            done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False,
                                  env={**os.environ, **env})
            seconds = time.monotonic() - started
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return 1
            data = json.loads(report.read_text())
            steps = {step["id"]: step["seconds"] for step in data["timeline"]}
            detail = ", ".join(f"{name} {steps[name]:.1f}" for name in WAITS if name in steps)
            print(f"run {number}: {seconds:.1f} s from start to proven login, 2 boots (rescue system, server), "
                  f"0 keys typed by hand; steps (s): {detail}")
    finally:
        stop_leftovers(bed)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    require_programs("qemu-system-x86_64", "mkfs.ext4", "qemu-img")
    for number in range(1, args.runs + 1):
        if one_run(number):
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
