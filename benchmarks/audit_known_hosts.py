"""What a hashed known_hosts file costs an audit: once up front, and per host inside its timeout.

    .venv/bin/python benchmarks/audit_known_hosts.py [--hosts 1000] [--lines 10000] [--salts 0]

Writes a known_hosts file of --lines hashed lines, as `ssh-keygen -H` or
`HashKnownHosts yes` write them (a fresh salt per line; --salts N shares N
salts among them instead), vouching for --hosts of them plus other names, and
measures:

- reading the file (`KnownHosts.load`);
- `HostTrust.prepare`: every host looked up once, in the main thread, before
  the checks start (hosts x distinct salts HMACs);
- the per-host decision each check makes inside its timeout (`for_host`),
  with the lookups prepared, and, for comparison, without (one HMAC per
  distinct salt inside the check; before `prepare` every check paid that,
  with `hmac.digest`, about three times slower per HMAC).

Figures, not assertions: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import os
import tempfile
import time
from pathlib import Path

from recovery.audit.engine import HostTrust
from recovery.audit.model import Host
from recovery.ssh.hostkeys import KnownHosts

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINtVjkJUVDUd+Fbp0qgMhRtJ8ZPi8GIvzL+uYs4XT/Ur"


def hashed(name: str, salt: bytes) -> str:
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--salts", type=int, default=0, help="distinct salts (0: one per line, as ssh-keygen -H)")
    args = parser.parse_args()
    salts = [os.urandom(20) for _ in range(args.salts)]
    names = [f"10.{n // 65536}.{n // 256 % 256}.{n % 256}" for n in range(args.lines)]
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "known_hosts"
        path.write_text(
            "".join(
                f"{hashed(name, salts[n % len(salts)] if salts else os.urandom(20))} {KEY}\n"
                for n, name in enumerate(names)
            )
        )
        hosts = [
            Host(f"h{n}", names[n * args.lines // args.hosts], 22, "ops", (Path("/k"),)) for n in range(args.hosts)
        ]

        started = time.perf_counter()
        known = KnownHosts.load(path)
        loaded = time.perf_counter() - started

        cold = HostTrust(known)
        sample = hosts[: min(50, len(hosts))]
        started = time.perf_counter()
        for host in sample:
            cold.for_host(host)
        unprepared = (time.perf_counter() - started) / len(sample)

        trust = HostTrust(known)
        started = time.perf_counter()
        trust.prepare(hosts)
        prepared = time.perf_counter() - started
        started = time.perf_counter()
        decisions = [trust.for_host(host) for host in hosts]
        per_host = (time.perf_counter() - started) / len(hosts)

    assert all(decision.check.pins for decision in decisions), "a host was not found"
    distinct = args.salts or args.lines
    print(f"{args.lines} hashed lines ({distinct} salts), {args.hosts} hosts")
    print(f"  load the file:                     {loaded * 1000:9.1f} ms")
    print(f"  prepare (main thread, once):       {prepared * 1000:9.1f} ms  ({args.hosts} x {distinct} HMACs)")
    print(f"  per host in its check, prepared:   {per_host * 1e6:9.1f} µs")
    print(f"  per host in its check, unprepared: {unprepared * 1e6:9.1f} µs  (one HMAC per distinct salt)")


if __name__ == "__main__":
    main()
