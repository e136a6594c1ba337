"""`recovery revoke` across a fleet of real SSH logins on loopback, each with its own authorized_keys.

    .venv/bin/python benchmarks/revoke_fleet.py [--hosts 200] [--holding 0.5] [--concurrency 50]
                                                [--rounds 3] [--stolen-key] [--bastion] [--no-ansible]
                                                                                  (root: it starts sshd)

The fleet: one sshd per 16 ports in a private mount namespace whose /etc (an overlay) has a passwd listing --hosts
users, each with its own home and authorized_keys (the admin key, one other key, and the stolen
key for a --holding share of them). A "host" of the inventory is one of those users on one port,
so every host is a real SSH handshake, login and session, and a real file to rewrite; the machine's
real users are never seen. Each round re-seeds the files, then runs `recovery revoke` as a child
process (JSON report), and checks every count is exact: the holding hosts `removed`, the others
`clean`, the stolen key gone from exactly the holding files, every other line kept. With
--stolen-key each host is also proven by a login with the stolen key (auth_rejected).

With --bastion each round also revokes through a jump host (one more sshd, at LogLevel VERBOSE,
whose log counts the logins to it: the run shares a few, a direct-tcpip channel per host), and
audits the fleet with `recovery audit`, directly and through the jump host (every host `ok`,
exactly); it prints each ratio to the direct run (the issue's goal: within 1.5x).

Prints the median wall time, hosts per second, and whether the counts were exact. Beside it
runs `ansible all -m ansible.posix.authorized_key -a "... state=absent" -f 20` on the same fleet,
its counts checked too (CHANGED for the holding hosts, SUCCESS for the others, every file exact;
the issue's goal: revoke at least 5x faster). Ansible is `ansible` on PATH, else the one in
.cache/ansible-venv, installed there (a venv of its own, `pip install ansible`: ansible-core
alone lacks authorized_key, which is in the ansible.posix collection the `ansible` package
bundles) when missing; --no-ansible skips it. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from recovery.lab import commands, processes, sshd
from recovery.ssh.keys import KeyPair, generate_keypair

PORTS_PER_SSHD = 16
OVERLAY_ETC = '/usr/bin/mount -t overlay overlay -o "lowerdir=/etc,upperdir=$0,workdir=$1" /etc && shift && exec "$@"'
FIRST_UID = 61000
ROOT = Path(__file__).resolve().parents[1]
ANSIBLE_VENV = ROOT / ".cache" / "ansible-venv"
OTHER = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBF9u7Q3vUMKTGjzHVZP1bzUXXOCVHTBTvjXwcoxnP0v other@ops"


@dataclass(frozen=True)
class Fleet:
    directory: Path
    users: list[str]
    ports: list[int]
    host_key: str
    admin: KeyPair
    stolen: KeyPair
    bastion_port: int

    @property
    def bastion_log(self) -> Path:
        return self.directory / "sshd_bastion.log"

    def bastion_logins(self) -> int:
        """Logins to the bastion so far (its log is VERBOSE: each accepted key is a line)."""
        return self.bastion_log.read_text(errors="replace").count("Accepted publickey for")

    def home(self, user: str) -> Path:
        return self.directory / "homes" / user

    def seed(self, holding: set[str]) -> None:
        for index, user in enumerate(self.users):
            lines = [self.admin.public_line, OTHER] + ([self.stolen.public_line] if user in holding else [])
            path = self.home(user) / ".ssh" / "authorized_keys"
            path.write_text("\n".join(lines) + "\n")
            os.chown(path, FIRST_UID + index, FIRST_UID + index)
            path.chmod(0o600)

    def inventory(self) -> Path:
        lines = ["defaults:", f"  key: {self.admin.private_path}", f"  host_key: '{self.host_key}'",
                 "  host: 127.0.0.1", "hosts:"]
        for index, user in enumerate(self.users):
            lines.append(f"  - {{name: {user}, user: {user}, port: {self.ports[index % len(self.ports)]}}}")
        path = self.directory / "inventory.yaml"
        path.write_text("\n".join(lines) + "\n")
        return path


@contextlib.contextmanager
def fleet(hosts: int) -> Iterator[Fleet]:
    directory = Path(tempfile.mkdtemp(prefix="rcv-revoke-bench-"))
    directory.chmod(0o755)
    pids: list[int] = []
    try:
        users = [f"rb{index:04d}" for index in range(hosts)]
        (directory / "homes").mkdir(mode=0o755)
        entries = [f"root:x:0:0:root:{directory / 'root'}:/bin/sh"]
        entries += [line for line in Path("/etc/passwd").read_text().splitlines() if line.startswith("sshd:")]
        bastion_home = directory / "homes" / "bastion"
        (bastion_home / ".ssh").mkdir(parents=True, mode=0o700)
        entries.append(f"bastion:x:{FIRST_UID - 1}:{FIRST_UID - 1}::{bastion_home}:/bin/sh")
        for index, user in enumerate(users):
            home = directory / "homes" / user
            (home / ".ssh").mkdir(parents=True, mode=0o700)
            home.chmod(0o755)
            for path in (home, home / ".ssh"):
                os.chown(path, FIRST_UID + index, FIRST_UID + index)
            entries.append(f"{user}:x:{FIRST_UID + index}:{FIRST_UID + index}::{home}:/bin/sh")
        # /etc overlaid, not /etc/passwd bound: useradd elsewhere renames over /etc/passwd, which would
        # detach a bind mount on it (Linux >= 3.18) and show sshd the real users again.
        passwd = "\n".join(entries) + "\n"
        key_path = directory / "host_key"
        public = commands.generate_key(key_path, comment="revoke-bench")
        ports = [processes.free_port() for _ in range(min(hosts, 4 * PORTS_PER_SSHD))]
        bastion_port = processes.free_port()
        binary = commands.find_tool("sshd", "openssh-server")
        groups = [ports[start:start + PORTS_PER_SSHD] for start in range(0, len(ports), PORTS_PER_SSHD)]
        for number, group in enumerate([*groups, [bastion_port]]):
            bastion = group == [bastion_port]
            config = directory / f"sshd_config_{number}"
            config.write_text("\n".join([
                *(f"Port {port}" for port in group),
                "ListenAddress 127.0.0.1", f'HostKey "{key_path}"', "PidFile none",
                "AuthorizedKeysFile .ssh/authorized_keys", "PasswordAuthentication no",
                "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes yes",
                "LogLevel VERBOSE" if bastion else "LogLevel ERROR",
                "PermitRootLogin no", "MaxStartups 400:30:800", "MaxSessions 20", "",
            ]))
            log = directory / ("sshd_bastion.log" if bastion else f"sshd_{number}.log")
            upper, work = directory / f"etc-upper-{number}", directory / f"etc-work-{number}"  # one overlay each
            upper.mkdir()
            work.mkdir()
            (upper / "passwd").write_text(passwd)
            argv = ["/usr/bin/unshare", "--mount", "/bin/sh", "-c", OVERLAY_ETC, str(upper), str(work), binary, "-D",
                    "-f", str(config), "-E", str(log)]
            pids.append(processes.spawn(argv, log_path=log))
        if not processes.poll_until(lambda: all(sshd.answers(port) for port in [*ports, bastion_port]), 30.0):
            raise RuntimeError("the benchmark's sshd did not answer on every port")
        admin = generate_keypair(directory / "admin", comment="admin")
        stolen = generate_keypair(directory / "stolen", comment="stolen@laptop")
        (bastion_home / ".ssh" / "authorized_keys").write_text(admin.public_line + "\n")
        for path in (bastion_home, bastion_home / ".ssh", bastion_home / ".ssh" / "authorized_keys"):
            os.chown(path, FIRST_UID - 1, FIRST_UID - 1)
        yield Fleet(directory, users, ports, commands.fingerprint(public), admin, stolen, bastion_port)
    finally:
        for pid in pids:
            processes.stop(pid)
        shutil.rmtree(directory, ignore_errors=True)


def run_revoke(fleet: Fleet, concurrency: int, prove: bool, *, jump: bool = False) -> tuple[float, dict[str, str]]:
    argv = [sys.executable, "-m", "recovery", "revoke", "--public-key", str(fleet.stolen.public_path),
            "--inventory", str(fleet.inventory()), "--concurrency", str(concurrency), "--format", "json",
            "--timeout", "30"]
    if prove:
        argv += ["--stolen-key", str(fleet.stolen.private_path)]
    if jump:  # every host through the bastion (which shares the fleet's host key)
        argv += ["--jump", f"bastion@127.0.0.1:{fleet.bastion_port}", "--jump-host-keys", fleet.host_key]
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if done.returncode not in (0, 1):
        raise RuntimeError(f"recovery revoke exited {done.returncode}: {done.stderr[-500:]}")
    hosts = json.loads(done.stdout)["hosts"]
    for host in hosts:
        if host["status"] not in ("removed", "clean"):
            print(f"  revoke{' through the jump host' if jump else ''} {host['name']}: {host['status']}: "
                  f"{host['message'][:300]}", file=sys.stderr)
    return seconds, {host["name"]: host["status"] for host in hosts}


def run_audit(fleet: Fleet, concurrency: int, *, jump: bool = False) -> tuple[float, bool]:
    """`recovery audit` of the fleet with the admin key; (seconds, every host ok and counted once)."""
    argv = [sys.executable, "-m", "recovery", "audit", "--inventory", str(fleet.inventory()), "--format", "json",
            "--concurrency", str(concurrency), "--timeout", "30"]
    if jump:
        argv += ["--jump", f"bastion@127.0.0.1:{fleet.bastion_port}", "--jump-host-keys", fleet.host_key]
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if done.returncode not in (0, 1):
        raise RuntimeError(f"recovery audit exited {done.returncode}: {done.stderr[-500:]}")
    hosts = json.loads(done.stdout)["hosts"]
    for host in hosts:
        if host["status"] != "ok":
            print(f"  audit{' through the jump host' if jump else ''} {host['name']}: {host['status']}: "
                  f"{host['message'][:300]}", file=sys.stderr)
    return seconds, sorted(host["name"] for host in hosts if host["status"] == "ok") == sorted(fleet.users)


def find_ansible(install: bool) -> str | None:
    """`ansible` on PATH, else in .cache/ansible-venv, installed there now when `install` (it takes minutes)."""
    found = shutil.which("ansible")
    if found:
        return found
    ansible = ANSIBLE_VENV / "bin" / "ansible"
    if ansible.exists() or not install:
        return str(ansible) if ansible.exists() else None
    print(f"ansible is not installed: installing it into {ANSIBLE_VENV} (python3 -m venv, then pip install "
          "ansible: ansible-core alone lacks authorized_key, which the ansible.posix collection has; a few "
          "minutes, once). --no-ansible skips it.", file=sys.stderr, flush=True)
    subprocess.run(["python3", "-m", "venv", str(ANSIBLE_VENV)], check=True)
    subprocess.run([str(ANSIBLE_VENV / "bin" / "pip"), "install", "--quiet", "ansible"], check=True)
    return str(ansible)


def run_ansible(fleet: Fleet, ansible: str, holding: set[str]) -> tuple[float, bool]:
    """`ansible -m ansible.posix.authorized_key state=absent -f 20`; (seconds, every count exact)."""
    inventory = fleet.directory / "ansible.ini"
    inventory.write_text("[fleet]\n" + "".join(
        f"{user} ansible_host=127.0.0.1 ansible_port={fleet.ports[index % len(fleet.ports)]} ansible_user={user}\n"
        for index, user in enumerate(fleet.users)))
    known = fleet.directory / "known_hosts"
    known.write_text("".join(f"[127.0.0.1]:{port} {(fleet.directory / 'host_key.pub').read_text()}"
                             for port in fleet.ports))
    env = {**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
           "ANSIBLE_SSH_ARGS": f"-o UserKnownHostsFile={known} -o ControlMaster=no",
           "ANSIBLE_LOCAL_TEMP": str(fleet.directory / "ansible-tmp")}
    module_args = f"user={{{{ ansible_user }}}} state=absent key='{fleet.stolen.public_line}'"
    started = time.monotonic()
    done = subprocess.run([ansible, "all", "-i", str(inventory), "-f", "20", "--one-line", "--private-key",
                           str(fleet.admin.private_path), "-m", "ansible.posix.authorized_key", "-a", module_args],
                          capture_output=True, text=True, check=False, env=env)
    seconds = time.monotonic() - started
    results = dict(re.findall(r"^(\S+) \| ([A-Z]+)", done.stdout, re.MULTILINE))
    expected = {user: "CHANGED" if user in holding else "SUCCESS" for user in fleet.users}
    if results != expected:
        wrong = [f"{user}: {results.get(user)}" for user in fleet.users if results.get(user) != expected[user]]
        print(f"  ansible: {len(wrong)} hosts not as expected, e.g. {wrong[:3]}; {done.stderr[-300:]}",
              file=sys.stderr)
    return seconds, results == expected and exact(fleet, holding, {}, check_statuses=False)


def exact(fleet: Fleet, holding: set[str], statuses: dict[str, str], *, check_statuses: bool = True) -> bool:
    expected = {user: "removed" if user in holding else "clean" for user in fleet.users}
    files_ok = all(
        (fleet.home(user) / ".ssh" / "authorized_keys").read_text() == f"{fleet.admin.public_line}\n{OTHER}\n"
        for user in fleet.users
    )
    return (statuses == expected or not check_statuses) and files_ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--holding", type=float, default=0.5, help="share of hosts that hold the stolen key")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stolen-key", action="store_true", help="also prove each host with the stolen key")
    parser.add_argument("--bastion", action="store_true",
                        help="also revoke and audit through a jump host, beside direct")
    parser.add_argument("--no-ansible", action="store_true", help="do not run (nor install) ansible beside it")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root: the benchmark starts sshd with its own passwd database", file=sys.stderr)
        return 2
    ansible = None if args.no_ansible else find_ansible(install=True)
    figures: dict[str, list[float]] = {"revoke": [], "revoke bastion": [], "audit": [], "audit bastion": [],
                                       "ansible": []}
    exacts = dict.fromkeys(figures, True)
    logins: dict[str, list[int]] = {"revoke bastion": [], "audit bastion": []}
    with fleet(args.hosts) as hosts:
        holding = {user for index, user in enumerate(hosts.users) if index < round(args.holding * args.hosts)}

        def revoke(name: str, jump: bool) -> None:
            hosts.seed(holding)
            before = hosts.bastion_logins()
            seconds, statuses = run_revoke(hosts, args.concurrency, args.stolen_key, jump=jump)
            figures[name].append(seconds)
            exacts[name] = exacts[name] and exact(hosts, holding, statuses)
            if jump:
                logins[name].append(hosts.bastion_logins() - before)

        def audit(name: str, jump: bool) -> None:
            before = hosts.bastion_logins()
            seconds, ok = run_audit(hosts, args.concurrency, jump=jump)
            figures[name].append(seconds)
            exacts[name] = exacts[name] and ok
            if jump:
                logins[name].append(hosts.bastion_logins() - before)

        for _ in range(args.rounds):
            revoke("revoke", jump=False)
            if args.bastion:
                revoke("revoke bastion", jump=True)
                audit("audit", jump=False)
                audit("audit bastion", jump=True)
            if ansible:
                hosts.seed(holding)
                seconds, ok = run_ansible(hosts, ansible, holding)
                figures["ansible"].append(seconds)
                exacts["ansible"] = exacts["ansible"] and ok
    medians = {name: statistics.median(values) for name, values in figures.items() if values}

    def exactly(name: str) -> str:
        return "yes" if exacts[name] else "NO"

    median = medians["revoke"]
    print(f"recovery revoke: {args.hosts} hosts ({len(holding)} holding the key), concurrency "
          f"{args.concurrency}{', proven with the stolen key' if args.stolen_key else ''}: median "
          f"{median:.2f} s over {args.rounds} rounds ({args.hosts / median:.0f} hosts/s); every count exact: "
          f"{exactly('revoke')}")
    if args.bastion:
        through = medians["revoke bastion"]
        print(f"revoke through one jump host: median {through:.2f} s, {through / median:.2f}x direct; logins to "
              f"the jump host per run: {logins['revoke bastion']}; every count exact: {exactly('revoke bastion')}")
        direct, through = medians["audit"], medians["audit bastion"]
        print(f"recovery audit: median {direct:.2f} s direct, {through:.2f} s through one jump host: "
              f"{through / direct:.2f}x (goal: within 1.5x); logins to the jump host per run: "
              f"{logins['audit bastion']}; every host ok, exactly: direct {exactly('audit')}, through "
              f"{exactly('audit bastion')}")
    if "ansible" in medians:
        other = medians["ansible"]
        print(f"ansible -m ansible.posix.authorized_key state=absent -f 20: median {other:.2f} s (every count "
              f"exact: {exactly('ansible')}); revoke is {other / median:.1f}x faster (goal: 5x)")
    else:
        print("ansible not run (--no-ansible): no side-by-side figure (goal: revoke 5x faster than ansible -f 20)")
    return 0 if all(exacts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
