"""A stand-in for `virsh qemu-agent-command` that relays to a QEMU agent socket, as libvirtd would.

There is no libvirtd on our machines (Debian's needs the libvirt-qemu user and system setup that
libvirt-daemon-system makes, and a domain of its own would cost a second boot), so the libvirt
driver is tested against this: the same command line virsh takes, the agent's real answers from
the test VM's qemu-ga, and libvirt's own wording for the failures the driver maps
("failed to get domain", "Guest agent is not responding", "unable to execute QEMU agent command").

    FAKE_VIRSH_DOMAINS='{"web-1": "/path/qga.sock"}' fake_virsh.py [-c URI] qemu-agent-command DOMAIN JSON [--timeout N]

Each call is appended to FAKE_VIRSH_LOG (one JSON argv per line) when that is set.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from recovery.agent.qga import UnixSocketTransport
from recovery.errors import AgentError


def main(argv: list[str]) -> int:
    if log := os.environ.get("FAKE_VIRSH_LOG"):
        with open(log, "a") as file:
            file.write(json.dumps(argv) + "\n")
    args = list(argv)
    if args[:1] == ["-c"]:
        args = args[2:]
    timeout = 5.0
    if "--timeout" in args:
        at = args.index("--timeout")
        timeout = float(args[at + 1])
        del args[at:at + 2]
    if len(args) != 3 or args[0] != "qemu-agent-command":
        print("error: command line not understood by the fake virsh", file=sys.stderr)
        return 1
    _, domain, text = args
    sockets = json.loads(os.environ.get("FAKE_VIRSH_DOMAINS", "{}"))
    if domain not in sockets:
        print(f"error: failed to get domain '{domain}'", file=sys.stderr)
        return 1
    request = json.loads(text)
    transport = UnixSocketTransport(sockets[domain], connect_timeout=timeout)
    try:
        answer = transport.command(request["execute"], request.get("arguments"), timeout)
    except AgentError as exc:
        if exc.blocked:
            print(f"error: internal error: unable to execute QEMU agent command '{request['execute']}': "
                  f"The command {request['execute']} has been disabled for this instance", file=sys.stderr)
        else:
            print("error: Guest agent is not responding: QEMU guest agent is not connected", file=sys.stderr)
        return 1
    finally:
        transport.close()
    print(json.dumps({"return": answer}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
