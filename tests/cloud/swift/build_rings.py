"""Build the account, container and object rings of a one-device test cluster.

Run with the Swift venv's python: ``build_rings.py SWIFT_DIR DEVICE ACCOUNT_PORT
CONTAINER_PORT OBJECT_PORT``. Part power 6 and one replica keep the rings tiny; the
single device lives on 127.0.0.1 at the port of the server that owns each ring.
"""

import sys

from swift.common.ring import RingBuilder

PART_POWER = 6
REPLICAS = 1
MIN_PART_HOURS = 1


def main(swift_dir: str, device: str, *ports: str) -> None:
    for kind, port in zip(("account", "container", "object"), ports, strict=True):
        builder = RingBuilder(PART_POWER, REPLICAS, MIN_PART_HOURS)
        builder.add_dev(
            {"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1", "port": int(port), "device": device, "weight": 100}
        )
        builder.rebalance()
        builder.get_ring().save(f"{swift_dir}/{kind}.ring.gz")


if __name__ == "__main__":
    main(*sys.argv[1:])
