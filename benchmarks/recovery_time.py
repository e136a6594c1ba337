"""How long a lab recovery takes, step by step, and how fast `recovery --help` starts.

    .venv/bin/python benchmarks/recovery_time.py [N]     (root: it starts the lab)

Runs N recoveries through the CLI against one lab (each with a new key), then
prints the median and worst wall time of every step and of the whole command,
and the median start-up time of `recovery --help`. Figures, not assertions.
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
from pathlib import Path

from recovery import lab

ROOT = Path(__file__).resolve().parents[1]
PLAYBOOK = ROOT / "playbooks" / "restore-access-serial.yaml"


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    return time.perf_counter() - started, done


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    work = Path(tempfile.mkdtemp(prefix="rcv-bench-"))
    work.chmod(0o755)
    info = lab.up(work / "lab")
    steps: dict[str, list[float]] = defaultdict(list)
    totals: list[float] = []
    try:
        env = {
            **os.environ,
            "RECOVERY_CONSOLE_PASSWORD": info.console_password().reveal(),
            "RECOVERY_KEYS_DIR": str(work / "keys"),
        }
        for publish in ("inline", "http"):
            for _ in range(runs):
                seconds, done = timed(
                    [sys.executable, "-m", "recovery", "run", str(PLAYBOOK), "--json",
                     "-e", f"console_url={info.console_url}", "-e", f"ssh_host={info.ssh_host}",
                     "-e", f"ssh_port={info.ssh_port}", "-e", f"user={info.user}",
                     "-e", f"host_key_fingerprint={info.host_key_fingerprint}", "-e", f"publish={publish}",
                     "--journal", str(work / "runs")],
                    env,
                )
                if done.returncode != 0:
                    print(done.stderr, file=sys.stderr)
                    return 1
                report = json.loads(done.stdout)
                totals.append(seconds)
                for record in report["timeline"]:
                    if record["status"] == "succeeded":
                        steps[f"{publish}:{record['id']}"].append(record["seconds"])
                steps[f"{publish}:(run, in process)"].append(report["seconds"])
                steps[f"{publish}:(command, wall)"].append(seconds)
    finally:
        lab.down(work / "lab")
        shutil.rmtree(work, ignore_errors=True)
    print(f"{runs} recoveries per publishing method against the lab (seconds)")
    print(f"{'step':32} {'median':>8} {'max':>8}")
    for name, values in steps.items():
        print(f"{name:32} {statistics.median(values):8.3f} {max(values):8.3f}")
    startup = sorted(timed([sys.executable, "-m", "recovery", "--help"])[0] for _ in range(10))
    print(f"{'recovery --help start-up':32} {statistics.median(startup):8.3f} {startup[-1]:8.3f}")
    probe = (
        "import sys, recovery.cli; heavy = ('paramiko', 'cryptography', 'websocket', 'openstack', 'yaml'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    heavy = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    print(f"heavy modules imported by the CLI before a command runs: {heavy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
