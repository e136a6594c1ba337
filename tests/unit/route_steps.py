"""A test-only step type for `choose:` routes: it records its call and fails the way a route can fail."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from recovery.engine.context import StepContext
from recovery.engine.registry import Outputs, doc, step
from recovery.errors import AgentError, CloudError, GuestCommandError, LoginRejected, NotPossible, StepError
from tests.unit.fake_steps import CALLS

Failure = Literal["", "login_rejected", "agent_silent", "agent_dropped_keys", "cloud_409", "no_agent_image",
                  "guest_failed", "bug"]


@dataclass(frozen=True)
class RouteParams:
    message: str = doc("what to record", default="")
    fail: Failure = doc("how to fail", default="")
    undo_interrupted: bool = doc("the undo behaves like an operator pressing Ctrl-C during it", default=False)


_ERRORS: dict[str, StepError] = {
    "login_rejected": LoginRejected("the console refused the password for ops"),
    "agent_silent": AgentError("the guest agent of vm did not answer guest-sync-delimited in time",
                               command="guest-sync-delimited"),
    "agent_dropped_keys": AgentError("the guest agent dropped 1 key(s)", command="guest-ssh-add-authorized-keys"),
    "cloud_409": CloudError("changePassword: the guest agent is not enabled", status_code=409),
    "no_agent_image": NotPossible("server vm: its image does not enable the QEMU guest agent"),
    "guest_failed": GuestCommandError("the install script failed half-way"),
    "bug": StepError("a failure that says nothing about the route"),
}


@step("test.route", params=RouteParams, outputs={"message": "the message"}, repeatable=True)
def route_step(ctx: StepContext, params: RouteParams) -> Outputs:
    """Record the call, defer an undo, fail as asked."""
    CALLS.append(f"{ctx.step_id}:{params.message}")
    def undo() -> None:
        CALLS.append(f"undo:{ctx.step_id}")
        if params.undo_interrupted:
            raise KeyboardInterrupt

    ctx.defer(f"undo {ctx.step_id}", undo)
    if params.fail:
        raise _ERRORS[params.fail]
    return {"message": params.message}
