"""Reading Ansible inventories: how long, and whether every host comes out as Ansible has it.

    .venv/bin/python benchmarks/ansible_inventory.py [--ansible-inventory PATH]

Each inventory goes through what `--inventory` does (`load_inventory`, a `--limit` too): a
real-shaped fleet of 10,000 hosts in 100 groups under two parents, as INI and as YAML, and
the hostile shapes the size cap lets through (a chain of 150,000 nested groups, a dense
60-level group graph, 4 MiB of host lines). Where `ansible-inventory` is installed (a path,
or on PATH), it reads the same real-shaped files and every host's address, port and user
are compared with ours. Figures, not assertions.

Measured on the 2-core test machine with load averages of 23 to 55 (December 2026, six other
engineers' test runs beside it: noisy figures, ours and Ansible's alike): 10,000 hosts in 1.6 to
4.2 s (INI) and 5.3 to 12.6 s (YAML), where `ansible-inventory --list` took 67 to 122 s and 61 to
240 s on the same files, every host identical (10,000/10,000 in both); 4 MiB of host lines
(167,769 hosts) in 61 to 74 s; the chain refused in 7.5 to 32 s and the dense graph in 1.8 to
7.5 s (before the depth and membership bounds the chain ran for minutes, and a dense graph with
1,000 hosts took 89 s). Against ansible-core 2.19.14 on 9 smaller inventories and 14 --limit
patterns shaped like the unit tests' (nested children, priorities, legacy names, host:port, IPv6):
no difference.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recovery.audit.inventory import HostDefaults, load_inventory
from recovery.errors import UsageError

FALLBACK = HostDefaults("cli-user", (Path("/keys/ops"),))


def fleet_ini(groups: int = 100, per_group: int = 100) -> str:
    lines = []
    for g in range(groups):
        lines.append(f"[g{g}]")
        lines += [f"h{g}-{h}.example.com ansible_host=10.{g}.{h // 256}.{h % 256} ansible_port={2200 + h % 5}"
                  for h in range(per_group)]
    lines += ["[web:children]", *(f"g{g}" for g in range(0, groups, 2)), "[db:children]",
              *(f"g{g}" for g in range(1, groups, 2)), "[web:vars]", "ansible_user=www", "[all:vars]",
              "ansible_user=ops", "[g7:vars]", "ansible_user=seven"]
    return "\n".join(lines) + "\n"


def fleet_yaml(groups: int = 100, per_group: int = 100) -> str:
    lines = ["all:", "  vars: {ansible_user: ops}", "  children:", "    web:", "      vars: {ansible_user: www}",
             "      children:"]
    for g in range(groups):
        lines += [f"        g{g}:", "          hosts:"]
        lines += [f"            h{g}-{h}.example.com: {{ansible_host: 10.{g}.{h // 256}.{h % 256}, "
                  f"ansible_port: {2200 + h % 5}}}" for h in range(per_group)]
    return "\n".join(lines) + "\n"


def chain(count: int = 150_000) -> str:
    return "[c0]\nh\n" + "".join(f"[c{i}:children]\nc{i + 1}\n" for i in range(count)) + f"[c{count}]\n"


def dense(levels: int = 60, width: int = 55) -> str:
    lines = [f"[l{level}_{a}:children]\n" + "".join(f"l{level + 1}_{b}\n" for b in range(width))
             for level in range(levels - 1) for a in range(width)]
    return "".join(lines) + "".join(f"[l{levels - 1}_{b}]\nx{b}\n" for b in range(width))


def flat_hosts(size: int = 4 * 1024 * 1024 - 64) -> str:
    line = "h{:07d} ansible_port=22\n"
    return "[g]\n" + "".join(line.format(i) for i in range(size // len(line.format(0))))


def measure(label: str, path: Path, limit: str | None = None) -> dict[str, tuple[str, int, str]]:
    started = time.perf_counter()
    try:
        hosts = load_inventory(path, FALLBACK, limit)
        outcome = f"{len(hosts):,} hosts"
    except UsageError as exc:
        hosts, outcome = [], "refused: " + str(exc).splitlines()[-1].strip()[:90]
    print(f"{label:<34} {time.perf_counter() - started:6.2f} s  {outcome}")
    return {host.name: (host.address or "", host.port, host.user) for host in hosts}


def ansible_view(tool: str, path: Path) -> tuple[float, dict[str, tuple[str, int, str]]]:
    """Every host's (address, port, user) as Ansible's ssh connection would take them."""
    started = time.perf_counter()
    done = subprocess.run([tool, "-i", str(path), "--list"], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    found = {}
    for name, values in json.loads(done.stdout)["_meta"]["hostvars"].items():
        address = values.get("ansible_ssh_host") or values.get("ansible_host") or name
        port = int(values.get("ansible_ssh_port") or values.get("ansible_port") or 22)
        found[name] = (address, port, values.get("ansible_ssh_user") or values.get("ansible_user") or "cli-user")
    return seconds, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ansible-inventory", default=shutil.which("ansible-inventory"), metavar="PATH")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        base = Path(directory)
        real = {"fleet.ini": fleet_ini(), "fleet.yaml": fleet_yaml()}
        hostile = {"chain.ini": chain(), "dense.ini": dense(), "flat.ini": flat_hosts()}
        for name, text in {**real, **hostile}.items():
            (base / name).write_text(text)
        ours = {name: measure(f"{name} ({len(text) / 2**20:.1f} MiB)", base / name) for name, text in real.items()}
        measure("fleet.ini -l 'g1*,web'", base / "fleet.ini", "g1*,web")
        for name, text in hostile.items():
            measure(f"{name} ({len(text) / 2**20:.1f} MiB)", base / name)
        if not args.ansible_inventory:
            print("ansible-inventory not found: no comparison (--ansible-inventory PATH)")
            return
        for name, hosts in ours.items():
            seconds, theirs = ansible_view(args.ansible_inventory, base / name)
            same = sum(hosts.get(host) == value for host, value in theirs.items())
            print(f"ansible-inventory {name:<16} {seconds:6.2f} s  identical hosts: {same:,}/{len(theirs):,}")


if __name__ == "__main__":
    main()
