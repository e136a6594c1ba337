"""The guest-agent route (restore-access-agent.yaml) on a running VM: start to proven login.

    .venv/bin/python benchmarks/agent_route.py [--runs 3]

It uses the agent test VM (tests/agentvm/: a Debian 12 guest with systemd, sshd and qemu-ga, built
once into .cache/agent-vm by `make test-agent-vm`), boots it once under QEMU (software emulation),
saves it to a file when the agent and sshd answer, and resumes fresh copies of that moment. Each run
is the whole `python -m recovery run playbooks/restore-access-agent.yaml` through the agent's unix
socket, ending in the SSH login with the host key pinned. Per round: a VM just resumed (the
emulator has translated none of the guest's code since the save, sshd's included); a VM that has
served one SSH login with the image's old key ("up", as a VM in use has), then a second recovery of
it ("again"), then one without facts (`-e facts=false`). Printed: the wall time of the command
(interpreter start included) and the seconds of each step from the run report. The goal is under
3 s once the VM is up. Under software emulation every process the guest starts costs 0.06-0.2 s:
besides the shell and the switch to the user, the script starts 14 with facts and 7 without.
What the guest goes through on this route: no boot, no key typed, no password set.

Measured 2026-12-06 (TCG, 2 cores). Before this session's last changes: facts on 3.2-3.8 s (install
1.7-2.1 s, verify 1.0-1.3 s), facts off 2.4-2.5 s. The changes: the script's snapshot takes its modes
from one `ls`, counts a small file's lines itself and checks a typed key through a pipe (7 processes
fewer with facts, 2 without); the user switch is setpriv from /etc/passwd instead of runuser's PAM
session; paramiko is imported while the guest runs the script (`StepContext.overlap`). After, 4 rounds
at load 0.5-0.9: resumed 2.37-2.66 s, up 2.48-2.62 s, again 2.27-2.60 s (install 1.17-1.44 s, verify
0.81-1.03 s), facts off 1.68-1.80 s (install 0.56-0.66 s). The machine has slower hours (the same code
then took 2.5-3.1 s up, 2.8-3.9 s resumed). Where the time goes now: interpreter start and imports
~0.25 s; the key 0.02 s; the install (the guest's processes); the SSH login ~0.85 s, nearly all the
emulated sshd: key exchange ~0.3 s, publickey ~0.16 s, the session (PAM) ~0.27 s, `id -un` ~0.14 s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.peers import require_programs
from tests.agentvm.vm import AgentVm, saved_vm, ssh_run

ROOT = Path(__file__).resolve().parents[1]
PLAYBOOK = ROOT / "playbooks" / "restore-access-agent.yaml"
GOAL = 3.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    require_programs("qemu-system-x86_64")
    worst: dict[tuple[str, bool], float] = {}
    with saved_vm() as saved:
        print(f"test bed: boot to agent and sshd {saved.boot_seconds:.1f} s, saved in {saved.save_seconds:.2f} s")
        for _ in range(args.runs):
            # Just resumed, the emulator has translated none of the guest's code since the save: every program
            # the route starts, sshd's side of the login included, is translated on its first run. A VM that has
            # been up has served SSH logins: one with the image's old key stands for them. Then a second
            # recovery of the same VM, and one without facts.
            rounds = ((False, [("resumed", True)]), (True, [("up", True), ("again", True), ("again", False)]))
            for warmed, runs in rounds:
                with saved.start() as vm:
                    print(f"  resumed to agent and sshd in {vm.start_seconds:.2f} s")
                    if warmed:
                        ssh_run(vm.ssh_port, vm.old_key, "true", user=vm.user)
                    for state, facts in runs:
                        seconds = _run(vm, facts, state)
                        if seconds is None:
                            return 1
                        worst[state, facts] = max(worst.get((state, facts), 0.0), seconds)
    for (state, facts), seconds in worst.items():
        verdict = "met" if seconds < GOAL else "NOT met"
        print(f"{state}, facts {'on' if facts else 'off'}: worst run {seconds:.2f} s; goal under {GOAL:.0f} s: "
              f"{verdict}")
    return 0 if worst["up", True] < GOAL else 1


def _run(vm: AgentVm, facts: bool, state: str) -> float | None:
    """One whole run through the agent, printed; its wall time, or None if it failed."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        argv = [sys.executable, "-m", "recovery", "run", str(PLAYBOOK), "-e", f"agent={vm.agent_url}",
                "-e", f"user={vm.user}", "-e", "ssh_host=127.0.0.1", "-e", f"ssh_port={vm.ssh_port}",
                "-e", f"host_key_fingerprint={vm.host_key_fingerprint}",
                "-e", f"key_path={scratch}/id_new", "-e", f"report={report}",
                "-e", f"facts={str(facts).lower()}", "--journal", f"{scratch}/runs"]
        started = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
        seconds = time.monotonic() - started
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return None
        data = json.loads(report.read_text())
        steps = ", ".join(f"{step['id']} {step['seconds']:.2f} s" for step in data["timeline"])
        proof = data["proof"]
        print(f"  {state}, facts {'on' if facts else 'off'}: {seconds:.2f} s from start to proven login "
              f"({proof['host_key_trust']} host key, as {proof['remote_user']}); steps: {steps}; boots 0, "
              f"keys typed {len(data['typed'])}")
        return seconds


if __name__ == "__main__":
    sys.exit(main())
