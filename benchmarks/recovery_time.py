"""How long a recovery takes, step by step, and how fast `recovery --help` starts.

    .venv/bin/python benchmarks/recovery_time.py [N]     (root: it starts the lab and the test cloud)

Runs N recoveries through the CLI against one lab for each publishing method
(inline, http), then N recoveries of the same lab found by name in the test cloud
(real Nova API and serial proxy, real Swift TempURL), and prints the median and
worst wall time of every step and of the whole command; then the start-up time of
`recovery --help`, which heavy modules it imports, and what `import openstack`
costs. Figures, not assertions.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the test cloud's fixtures live in tests/cloud

from benchmarks.peers import require_programs  # noqa: E402
from recovery import lab  # noqa: E402
from tests.cloud.nova_fixture import NovaServerSpec, running_nova  # noqa: E402
from tests.cloud.swift_fixture import running_swift  # noqa: E402

PLAYBOOK = ROOT / "playbooks" / "restore-access-serial.yaml"
Timings = dict[str, list[float]]


def timed(argv: Sequence[str], env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run(list(argv), capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    return time.perf_counter() - started, done


def recover(label: str, args: Sequence[str], env: dict[str, str], runs: int, timings: Timings) -> None:
    """Run the serial playbook `runs` times with `args`; add each step's seconds under `label`."""
    for _ in range(runs):
        seconds, done = timed([sys.executable, "-m", "recovery", "run", str(PLAYBOOK), "--json", *args], env)
        if done.returncode != 0:
            raise SystemExit(f"{label}: recovery failed:\n{done.stderr}")
        report = json.loads(done.stdout)
        for record in report["timeline"]:
            if record["status"] == "succeeded":
                timings[f"{label}:{record['id']}"].append(record["seconds"])
        timings[f"{label}:(run, in process)"].append(report["seconds"])
        timings[f"{label}:(command, wall)"].append(seconds)


def lab_runs(info: lab.LabInfo, work: Path, runs: int, timings: Timings) -> None:
    env = {**os.environ, "RECOVERY_CONSOLE_PASSWORD": info.console_password().reveal(),
           "RECOVERY_KEYS_DIR": str(work / "keys")}
    direct = ["-e", f"console_url={info.console_url}", "-e", f"ssh_host={info.ssh_host}",
              "-e", f"ssh_port={info.ssh_port}", "-e", f"user={info.user}",
              "-e", f"host_key_fingerprint={info.host_key_fingerprint}", "--journal", str(work / "runs")]
    for publish in ("inline", "http"):
        recover(publish, [*direct, "-e", f"publish={publish}"], env, runs, timings)


def cloud_runs(info: lab.LabInfo, work: Path, runs: int, timings: Timings) -> None:
    log = work / "console.log"
    log.write_text(f"-----BEGIN SSH HOST KEY FINGERPRINTS-----\n256 {info.host_key_fingerprint} root@web-1 (ED25519)\n"
                   "-----END SSH HOST KEY FINGERPRINTS-----\n")
    servers = [NovaServerSpec("web-1", fixed_ip="10.0.0.5", floating_ip="127.0.0.1")]
    with running_swift() as swift, running_nova((info.ssh_host, info.serial_port), log, servers) as nova:
        nova.clouds_yaml(work / "clouds.yaml", "bench", **swift.object_store_settings())
        env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(work / "clouds.yaml"),
               "RECOVERY_CONSOLE_PASSWORD": info.console_password().reveal(), "RECOVERY_KEYS_DIR": str(work / "keys")}
        args = ["--cloud", "bench", "-e", "server=web-1", "-e", f"user={info.user}", "-e", f"ssh_port={info.ssh_port}",
                "-e", "publish=swift", "--journal", str(work / "runs")]
        recover("cloud+swift", args, env, runs, timings)


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    require_programs("sshd", "agetty", "websockify")
    work = Path(tempfile.mkdtemp(prefix="rcv-bench-"))
    work.chmod(0o755)
    info = lab.up(work / "lab")
    timings: Timings = defaultdict(list)
    try:
        lab_runs(info, work, runs, timings)
        cloud_runs(info, work, runs, timings)
    finally:
        lab.down(work / "lab")
        shutil.rmtree(work, ignore_errors=True)
    print(f"{runs} recoveries per method against the lab (seconds)")
    print(f"{'step':34} {'median':>8} {'max':>8}")
    for name, values in timings.items():
        print(f"{name:34} {statistics.median(values):8.3f} {max(values):8.3f}")
    startup = sorted(timed([sys.executable, "-m", "recovery", "--help"])[0] for _ in range(10))
    print(f"{'recovery --help start-up':34} {statistics.median(startup):8.3f} {startup[-1]:8.3f}")
    probe = (
        "import sys, recovery.cli.main; heavy = ('paramiko', 'cryptography', 'websocket', 'openstack', 'yaml'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    heavy = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    print(f"heavy modules imported by the CLI before a command runs: {heavy}")
    bare = statistics.median(timed([sys.executable, "-c", "pass"])[0] for _ in range(5))
    with_openstack = statistics.median(timed([sys.executable, "-c", "import openstack"])[0] for _ in range(5))
    print(f"{'import openstack (cost over bare python)':34} {with_openstack - bare:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
