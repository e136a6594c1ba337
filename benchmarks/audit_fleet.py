"""`recovery audit` side by side with its peers on a fleet of real sshd servers on loopback.

    .venv/bin/python benchmarks/audit_fleet.py [--hosts 200] [--rounds 3] [--big 1000] [--timeout 5]
                                               [--ansible /path/to/venv/bin/ansible]      (root: it starts the lab)

The fleet: the lab's user (its old key is the audit key), sshd servers of 16
ports each with `MaxStartups 200:30:400` (the default drops 7-9% of connections
at this concurrency), one sshd that refuses every key, closed ports and a
tarpit that accepts TCP and never speaks. Hosts are spread round-robin over the
ports. Two fleets of --hosts hosts: all good, and mixed (85% good, 5% each of
rejected, closed and tarpit).

Every tool checks every host with host keys verified against the same
known_hosts file, and runs as a child process of this one, in alternating order
each round:

- recovery audit (libssh2, 50 at a time; authenticates, runs no command), and
  the same with its paramiko engine (`RECOVERY_AUDIT_ENGINE=paramiko`: what a
  machine without ssh2-python runs), a row beside it, not counted as a peer;
- a paramiko thread pool and an asyncssh semaphore script, 50 at a time, doing
  the same as the audit (connect, verify the host key, authenticate);
- OpenSSH `ssh HOST echo ok` under `xargs -P20`, with its default key exchange
  (sntrup761x25519) and with curve25519-sha256;
- `ansible all -m raw -a true -f 20`, if ansible is installed (--ansible).

`ssh` and ansible must open a session and run a command, which also costs the
servers a shell per host; the Python peers and the audit stop after
authentication. For each tool and fleet it prints the median wall time, the
ratio to the best peer, client CPU per host (user+sys of the tool's whole
process tree, from wait4), the peak RSS of its largest process, and whether the
count of successful logins is exactly the number of good hosts. Then the
start-up time (a one-host run), the audit at --big hosts (memory), and each
goal of issue 5 with the measured value. Figures, not assertions: run it on a
quiet machine, twice.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the fleet is built from the integration tests' parts

from benchmarks.peers import require_programs  # noqa: E402
from recovery import lab  # noqa: E402
from tests.integration.sshd_fleet import HOST, closed_port, extra_sshd, tarpit  # noqa: E402

PORTS_PER_SSHD = 16
GOOD_SSHDS = 4
PYTHON_CONCURRENCY = 50
SSH_PARALLEL = 20
AUDIT = "recovery audit"
AUDIT_PARAMIKO = "recovery audit (paramiko)"


# --- the peers that are Python scripts: run as `audit_fleet.py --peer NAME TARGETS` --------------


def peer_paramiko(targets: list[dict[str, Any]], config: dict[str, Any]) -> int:
    """A paramiko thread pool: connect (host key checked against known_hosts) and authenticate."""
    import paramiko

    key = paramiko.Ed25519Key.from_private_key_file(config["key"])
    known = paramiko.HostKeys(config["known_hosts"])  # read once, as the audit does
    timeout = config["timeout"]

    def check(target: dict[str, Any]) -> bool:
        client = paramiko.SSHClient()
        client.get_host_keys().update(known)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                target["host"], target["port"], config["user"], pkey=key, timeout=timeout, banner_timeout=timeout,
                auth_timeout=timeout, look_for_keys=False, allow_agent=False,
            )
        except Exception:  # every failure counts the same here: not ok
            return False
        finally:
            client.close()
        return True

    with ThreadPoolExecutor(PYTHON_CONCURRENCY) as pool:
        return sum(pool.map(check, targets))


def peer_asyncssh(targets: list[dict[str, Any]], config: dict[str, Any]) -> int:
    """An asyncssh semaphore script: the same check, 50 at a time on one event loop."""
    import asyncssh

    key = asyncssh.read_private_key(config["key"])
    known = asyncssh.read_known_hosts(config["known_hosts"])  # read once, as the audit does
    timeout = config["timeout"]

    async def check(slots: asyncio.Semaphore, target: dict[str, Any]) -> bool:
        async with slots:
            try:
                connection = await asyncssh.connect(
                    target["host"], target["port"], username=config["user"], client_keys=[key],
                    known_hosts=known, agent_path=None, connect_timeout=timeout, login_timeout=timeout,
                )
            except (OSError, asyncssh.Error, TimeoutError):
                return False
            connection.close()
            await connection.wait_closed()
            return True

    async def main() -> int:
        slots = asyncio.Semaphore(PYTHON_CONCURRENCY)
        return sum(await asyncio.gather(*(check(slots, target) for target in targets)))

    return asyncio.run(main())


PEERS: dict[str, Callable[[list[dict[str, Any]], dict[str, Any]], int]] = {
    "paramiko": peer_paramiko,
    "asyncssh": peer_asyncssh,
}


# --- the fleet ---------------------------------------------------------------------------------


@dataclass
class Fleet:
    """Ports by kind, the files every tool reads, and who is who."""

    work: Path
    user: str
    key: Path
    known_hosts: Path
    good: list[int]
    rejecting: list[int]
    closed: list[int]
    tarpit: int


@dataclass
class Plan:
    """One fleet as each tool wants it written, and how many logins must succeed."""

    name: str
    targets: list[dict[str, Any]]
    expected_ok: int
    files: dict[str, Path] = field(default_factory=dict)


@contextmanager
def running_fleet(work: Path) -> Iterator[Fleet]:
    with ExitStack() as stack:
        info = lab.up(work / "lab")
        stack.callback(lab.down, work / "lab")
        servers = [
            stack.enter_context(extra_sshd(work / "sshd", info.user, ports=PORTS_PER_SSHD, name=f"good{n}"))
            for n in range(GOOD_SSHDS)
        ]
        rejecting = stack.enter_context(extra_sshd(work / "sshd", info.user, ports=4, accept_keys=False, name="reject"))
        closed = [stack.enter_context(closed_port()) for _ in range(4)]
        pit = stack.enter_context(tarpit(backlog=1024))
        known_hosts = work / "known_hosts"
        lines = [line for server in [*servers, rejecting] for line in server.known_hosts_lines("ed25519")]
        known_hosts.write_text("\n".join(lines) + "\n")
        yield Fleet(
            work=work,
            user=info.user,
            key=info.old_key_path,
            known_hosts=known_hosts,
            good=[port for server in servers for port in server.ports],
            rejecting=list(rejecting.ports),
            closed=closed,
            tarpit=pit.port,
        )


def fleet_kinds(hosts: int, *, mixed: bool) -> list[str]:
    """All good, or 85% good and 5% each of rejected, closed and tarpit, spread through the fleet."""
    bad = hosts * 5 // 100 if mixed else 0
    kinds = ["rejected"] * bad + ["closed"] * bad + ["tarpit"] * bad
    kinds += ["good"] * (hosts - len(kinds))
    random.Random(hosts).shuffle(kinds)  # the same order for every tool
    return kinds


def plan(fleet: Fleet, name: str, kinds: list[str]) -> Plan:
    """The hosts as each tool wants them written; each kind's hosts go round-robin over its ports."""
    by_kind = {"good": fleet.good, "rejected": fleet.rejecting, "closed": fleet.closed, "tarpit": [fleet.tarpit]}
    targets = [
        {"name": f"vm-{n:04d}", "host": HOST, "port": by_kind[kind][n % len(by_kind[kind])], "kind": kind}
        for n, kind in enumerate(kinds)
    ]
    result = Plan(name, targets, expected_ok=sum(1 for target in targets if target["kind"] == "good"))
    directory = fleet.work / name
    directory.mkdir()
    inventory = directory / "inventory.yaml"
    inventory.write_text(
        f"defaults: {{host: {HOST}, user: {fleet.user}, key: {fleet.key}}}\nhosts:\n"
        + "".join(f"  - {{name: {t['name']}, port: {t['port']}}}\n" for t in targets)
    )
    ports = directory / "ports.txt"
    ports.write_text("".join(f"{t['port']}\n" for t in targets))
    ansible = directory / "ansible.ini"
    ansible.write_text(
        "[all]\n" + "".join(f"{t['name']} ansible_host={HOST} ansible_port={t['port']}\n" for t in targets)
    )
    as_json = directory / "targets.json"
    as_json.write_text(json.dumps(targets))
    result.files = {"inventory": inventory, "ports": ports, "ansible": ansible, "targets": as_json}
    return result


# --- the tools ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    wall: float
    cpu: float
    max_rss_mb: float
    ok: int


@dataclass(frozen=True)
class Tool:
    name: str
    command: Callable[[Plan], list[str]]
    count_ok: Callable[[str], int]
    env: dict[str, str] = field(default_factory=dict)


def measured(argv: list[str], env: dict[str, str] | None = None) -> tuple[Run, str]:
    """Run to completion; wall time, and CPU and peak RSS of the whole process tree from wait4."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})
        _, _, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = 0  # reaped by wait4 above; keeps Popen from waiting again
        out.seek(0)
        text = out.read().decode(errors="replace")
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, -1), text


def tools(fleet: Fleet, timeout: float, ansible: str | None) -> list[Tool]:
    python = sys.executable
    recovery = str(Path(python).with_name("recovery"))
    config = json.dumps({"user": fleet.user, "key": str(fleet.key), "known_hosts": str(fleet.known_hosts),
                         "timeout": timeout})
    ssh_options = [
        "-F", "/dev/null", "-i", str(fleet.key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
        "-o", f"UserKnownHostsFile={fleet.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes", "-o", f"ConnectTimeout={timeout:g}", "-o", "LogLevel=ERROR",
    ]

    def ssh_xargs(*extra: str) -> Callable[[Plan], list[str]]:
        # xargs stops at the first command that exits 255, which is how ssh reports any
        # failure to connect: a `sh -c '...; exit 0'` per host keeps it going (~1 ms each).
        ssh = f"ssh {' '.join(ssh_options + list(extra))} -p $0 {fleet.user}@{HOST} echo ok; exit 0"
        return lambda p: ["sh", "-c", f"xargs -P{SSH_PARALLEL} -n1 sh -c '{ssh}' < {p.files['ports']}"]

    def audit(p: Plan) -> list[str]:
        return [recovery, "audit", "--inventory", str(p.files["inventory"]), "--known-hosts", str(fleet.known_hosts),
                "--timeout", f"{timeout:g}", "--format", "json"]

    def audit_ok(out: str) -> int:
        return int(json.loads(out)["summary"]["ok"])

    chosen = [
        Tool(AUDIT, audit, audit_ok, env={"RECOVERY_AUDIT_ENGINE": "libssh2"}),
        Tool(AUDIT_PARAMIKO, audit, audit_ok, env={"RECOVERY_AUDIT_ENGINE": "paramiko"}),
        Tool("paramiko pool", lambda p: [python, __file__, "--peer", "paramiko", str(p.files["targets"]), config],
             int),
        Tool("asyncssh", lambda p: [python, __file__, "--peer", "asyncssh", str(p.files["targets"]), config], int),
        Tool("ssh xargs -P20", ssh_xargs(), lambda out: out.split().count("ok")),
        Tool("ssh xargs curve25519", ssh_xargs("-o", "KexAlgorithms=curve25519-sha256"),
             lambda out: out.split().count("ok")),
    ]
    if importlib.util.find_spec("asyncssh") is None:
        print("asyncssh is not installed: its row is missing (.venv/bin/pip install asyncssh; not a dependency)")
        chosen = [tool for tool in chosen if tool.name != "asyncssh"]
    if ansible:
        (fleet.work / "ansible.cfg").write_text("")
        chosen.append(
            Tool(
                "ansible raw -f20",
                lambda p: [ansible, "all", "-i", str(p.files["ansible"]), "-m", "raw", "-a", "true",
                           "-f", str(SSH_PARALLEL), "-u", fleet.user, "--private-key", str(fleet.key), "-o"],
                lambda out: sum(1 for line in out.splitlines() if " | CHANGED | " in line or " | SUCCESS | " in line),
                env={
                    "ANSIBLE_CONFIG": str(fleet.work / "ansible.cfg"),
                    "ANSIBLE_HOST_KEY_CHECKING": "True",
                    "ANSIBLE_SSH_ARGS": f"-o ControlMaster=no -o UserKnownHostsFile={fleet.known_hosts} "
                                        "-o GlobalKnownHostsFile=/dev/null -o IdentitiesOnly=yes",
                    "ANSIBLE_TIMEOUT": f"{timeout:g}",
                    "ANSIBLE_SSH_RETRIES": "0",
                    "ANSIBLE_LOCAL_TEMP": str(fleet.work / "ansible-tmp"),
                },
            )
        )
    return chosen


def run_tool(tool: Tool, fleet_plan: Plan) -> Run:
    run, out = measured(tool.command(fleet_plan), tool.env)
    try:
        ok = tool.count_ok(out)
    except (ValueError, KeyError):
        ok = -1
    return Run(run.wall, run.cpu, run.max_rss_mb, ok)


# --- the report --------------------------------------------------------------------------------


def table(title: str, results: dict[str, list[Run]], plan_: Plan) -> dict[str, float]:
    """Print one fleet's figures; returns median walls by tool."""
    walls = {name: statistics.median(run.wall for run in runs) for name, runs in results.items()}
    peers = {name: wall for name, wall in walls.items() if name not in (AUDIT, AUDIT_PARAMIKO)}
    best = min(peers.values())
    hosts = len(plan_.targets)
    print(f"\n{title}: {hosts} hosts, {plan_.expected_ok} good; medians of {len(next(iter(results.values())))} runs")
    print(f"{'tool':26} {'wall s':>8} {'vs best':>8} {'hosts/s':>8} {'CPU ms/host':>12} {'max RSS MB':>11}  counts")
    for name, runs in results.items():
        cpu = statistics.median(run.cpu for run in runs) / hosts * 1000
        rss = max(run.max_rss_mb for run in runs)
        counts = {run.ok for run in runs}
        exact = "exact" if counts == {plan_.expected_ok} else f"WRONG {sorted(counts)}"
        print(f"{name:26} {walls[name]:8.2f} {walls[name] / best:7.2f}x {hosts / walls[name]:8.0f} {cpu:12.1f} "
              f"{rss:11.1f}  {exact}")
    return walls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--big", type=int, default=1000, help="hosts for the audit's memory run (0: skip)")
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--ansible", default=shutil.which("ansible"), help="ansible executable (default: on PATH)")
    args, rest = parser.parse_known_args()
    if args.peer:
        targets = json.loads(Path(rest[0]).read_text())
        print(PEERS[args.peer](targets, json.loads(rest[1])))
        return 0

    require_programs("sshd", "ssh")
    work = Path(tempfile.mkdtemp(prefix="rcv-bench-audit-"))
    work.chmod(0o755)  # the lab user must reach its home through it
    try:
        with running_fleet(work) as fleet:
            return report(fleet, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(fleet: Fleet, args: argparse.Namespace) -> int:
    all_tools = tools(fleet, args.timeout, args.ansible)
    if not args.ansible:
        print("ansible is not installed: its row is missing (pip install ansible-core into a venv, pass --ansible)")
    audit = AUDIT
    good = plan(fleet, "good", fleet_kinds(args.hosts, mixed=False))
    mixed = plan(fleet, "mixed", fleet_kinds(args.hosts, mixed=True))
    results: dict[str, dict[str, list[Run]]] = {good.name: {}, mixed.name: {}}
    for round_number in range(args.rounds):
        # Rotate the order each round, so no tool always runs first (or right after the slowest).
        shift = round_number % len(all_tools)
        for tool in all_tools[shift:] + all_tools[:shift]:
            for fleet_plan in (good, mixed):
                results[fleet_plan.name].setdefault(tool.name, []).append(run_tool(tool, fleet_plan))
        print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr)
    order = [tool.name for tool in all_tools]
    good_walls = table("all good", {name: results["good"][name] for name in order}, good)
    mixed_walls = table("mixed", {name: results["mixed"][name] for name in order}, mixed)

    # A closed port answers at once, so this is the tool's own cost: start, load, report, exit.
    one = plan(fleet, "one", ["closed"])
    startup = {tool.name: statistics.median(run_tool(tool, one).wall for _ in range(5)) for tool in all_tools}
    print("\nstart-up (median wall of a run against one closed port, s): "
          + ", ".join(f"{name} {seconds:.3f}" for name, seconds in startup.items()))

    big_rss = big_wall = 0.0
    if args.big:
        big = plan(fleet, "big", fleet_kinds(args.big, mixed=False))
        big_run = run_tool(all_tools[0], big)
        big_rss, big_wall = big_run.max_rss_mb, big_run.wall
        print(f"\n{audit} at {args.big} hosts: wall {big_run.wall:.2f} s, peak RSS {big_run.max_rss_mb:.1f} MB, "
              f"CPU {big_run.cpu / args.big * 1000:.1f} ms/host, ok {big_run.ok}/{big.expected_ok}")

    peers = {name: wall for name, wall in good_walls.items() if name not in (AUDIT, AUDIT_PARAMIKO)}
    best_name = min(peers, key=peers.__getitem__)
    audit_cpu = statistics.median(run.cpu for run in results["good"][audit]) / args.hosts * 1000
    goals = [
        (f"wall within 1.1x of the best peer ({best_name})", f"{good_walls[audit] / peers[best_name]:.2f}x",
         good_walls[audit] <= 1.1 * peers[best_name]),
        ("client CPU under 5 ms per host", f"{audit_cpu:.1f} ms", audit_cpu < 5),
        ("start-up under 0.3 s", f"{startup[audit]:.3f} s", startup[audit] < 0.3),
        (f"mixed wall at most all-good + timeout + 0.5 s ({good_walls[audit] + args.timeout + 0.5:.2f} s)",
         f"{mixed_walls[audit]:.2f} s", mixed_walls[audit] <= good_walls[audit] + args.timeout + 0.5),
    ]
    ansible_name = next((tool.name for tool in all_tools if tool.name.startswith("ansible")), None)
    if ansible_name:
        speedup = good_walls[ansible_name] / good_walls[audit]
        goals.append(("at least 6x faster than ansible -m raw", f"{speedup:.1f}x", speedup >= 6))
    if args.big:
        goals.append((f"memory under 150 MB at N={args.big}", f"{big_rss:.1f} MB (wall {big_wall:.1f} s)",
                      big_rss < 150))
    print("\ngoals (issue 5):")
    for text, value, met in goals:
        print(f"  {'met    ' if met else 'NOT MET'}  {text}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
