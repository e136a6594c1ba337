"""How long reading a user's file takes, and how much memory, for real and for hostile inputs.

    .venv/bin/python benchmarks/readers.py

Each input goes through what the CLI does with it: `recovery.safety.readers.read_text`, then
`compose_yaml` and the consumer (`parse_playbook`, `parse_inventory`). The hostile ones are
the worst a size cap lets through: one flat list of single-digit items (the most YAML nodes per
byte, stopped by the node budget), an alias bomb (stopped after a few aliases), and text full
of template openers (linear since the parser stopped using lazy regexes). Figures, not assertions.

Measured on the 2-core test machine with a load average of 5 to 7 (December 2026): the shipped
serial playbook 0.01 s; an inventory of 10,000 hosts (0.5 MiB) 2.6 to 3.6 s and 28 MB; the worst
1 MiB playbook is refused in 1.4 to 3 s and 30 MB; the worst 4 MiB inventory in 13 to 17 s and
145 MB (9 s on a quieter machine); an alias bomb of 9^9 values in 1 ms; 1.6 MB of '{{' in 0.05 s
(the regex parser it replaced took 17 s for 40 KB).
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recovery.audit.inventory import HostDefaults, parse_inventory
from recovery.engine import templating
from recovery.engine.playbook import parse_playbook
from recovery.errors import UsageError
from recovery.safety import readers

ROOT = Path(__file__).resolve().parents[1]
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + level)}: &{chr(98 + level)} [{', '.join([f'*{chr(97 + level)}'] * 9)}]\n" for level in range(8)
)


def flat(size: int) -> str:
    return "steps: [" + ",".join("1" for _ in range(size // 2 - 10)) + "]\n"


def hosts(count: int) -> str:
    return "defaults: {user: ops, key: k}\nhosts:\n" + "".join(
        f"  - name: web-{i}\n    host: 10.0.{i // 256 % 256}.{i % 256}\n    port: 22\n" for i in range(count)
    )


def measure(label: str, text: str, parse: Callable[[str, Path], object]) -> None:
    """Time and peak memory growth in a forked child, so one case's garbage never counts for the next.

    Memory is the growth of the child's peak resident size (tracemalloc would slow the
    allocation-heavy parser several times over and distort the times).
    """
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "input.yaml"
        path.write_text(text)
        sys.stdout.flush()
        child = os.fork()
        if child:
            os.waitpid(child, 0)
            return
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        try:
            parse(readers.read_text(path, what="input", limit=readers.INVENTORY_LIMIT), path)
            outcome = "read"
        except (UsageError, templating.TemplateSyntaxError) as exc:
            outcome = "refused: " + str(exc).splitlines()[-1].strip().replace(directory, "")[:60]
        elapsed = time.perf_counter() - started
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 1024
        print(f"{label:<34} {len(text) / 2**20:6.2f} MiB {elapsed:7.3f} s {grown:7.1f} MB  {outcome}", flush=True)
        os._exit(0)


def main() -> None:
    def playbook(text: str, path: Path) -> object:
        return parse_playbook(text, path)

    def inventory(text: str, path: Path) -> object:
        return parse_inventory(text, str(path), base=path.parent, fallback=HostDefaults())

    def template(text: str, path: Path) -> object:
        return templating.parse(text)

    parse_playbook((ROOT / "playbooks" / "restore-access-serial.yaml").read_text(), Path("warm-up.yaml"))
    measure("shipped serial playbook", (ROOT / "playbooks" / "restore-access-serial.yaml").read_text(), playbook)
    measure("alias bomb (9^9 values)", BOMB, playbook)
    measure("worst 1 MiB playbook", flat(readers.TEXT_LIMIT), playbook)
    measure("inventory, 10,000 hosts", hosts(10_000), inventory)
    measure("worst 4 MiB inventory", flat(readers.INVENTORY_LIMIT).replace("steps", "hosts"), inventory)
    for size in (100_000, 400_000, 1_600_000):
        measure(f"template, {size:,} chars of '{{{{'", "{{" * (size // 2), template)


if __name__ == "__main__":
    main()
