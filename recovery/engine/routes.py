"""When a route of a `choose:` step is not possible, and the next one may be tried instead.

The rule (`recovery.engine.playbook.Route`): a route is given up for the next only
*before it changed anything*, which the playbook declares by its probe steps (the
route's first step, and the steps right after it marked `probe: true`), and only
for an error that says this way in does not exist, not that it broke half-way:

- the console refused the login, or could not be reached (`ChannelError`);
- SSH with the key given was refused, or found no sshd (`AuthRejected`,
  `ConnectionRefused`, `ConnectTimeout`); a changed host key is never one of these;
- the guest agent could not be reached or did not answer its first command (an
  `AgentError` about the connection or `guest-sync`, not one about a command that ran);
- the cloud answered that the action is not possible for this server (`CloudError`
  409: the agent is not enabled, or the state is wrong; 501: the agent does not answer);
- a step found so itself before asking (`NotPossible`: the image's properties give the
  server no guest agent, so Nova could not set a password).

Anything else, or the same errors after a step that is not a probe, fails the run as
any failed step does, and `--resume` goes back into the same route.
"""

from __future__ import annotations

from collections.abc import Callable

from recovery.errors import (
    AgentError,
    AuthRejected,
    ChannelError,
    CloudError,
    ConnectionRefused,
    ConnectTimeout,
    NotPossible,
    StepError,
)

__all__ = ["Confirm", "not_possible", "reboot_question"]

Confirm = Callable[[str], bool]
"""Asks the operator a yes/no question (a terminal prompt); the runner asks before a route that reboots."""

# The agent commands sent before anything runs in the guest: failing one of them means no agent answers.
_AGENT_HANDSHAKE = {None, "guest-sync", "guest-sync-delimited", "guest-ping", "guest-info"}
_CLOUD_NOT_POSSIBLE = {409, 501}


def not_possible(error: StepError) -> bool:
    """True when `error`, raised by a probe step, says the route cannot be taken (see the module doc)."""
    if isinstance(error, (ChannelError, AuthRejected, ConnectionRefused, ConnectTimeout, NotPossible)):
        return True
    if isinstance(error, AgentError):
        return error.command in _AGENT_HANDSHAKE and not error.blocked
    if isinstance(error, CloudError):
        return error.status_code in _CLOUD_NOT_POSSIBLE
    return False


def reboot_question(step_id: str, route_id: str, title: str) -> str:
    return (f"{step_id}: route {route_id} ({title}) reboots the VM: everything running on it stops for a "
            "while. Go ahead with this route?")
