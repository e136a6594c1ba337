"""console.open and console.login: reach a shell on the VM's console."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, cast

from recovery.engine import checks
from recovery.engine.config import Config
from recovery.engine.context import StepContext
from recovery.engine.registry import Outputs, doc, step
from recovery.engine.templating import Unknown
from recovery.errors import StepError
from recovery.safety.redact import Secret, Text, masked_url

NO_URL = (
    "no console URL: give -e console_url=... (token included; or RECOVERY_CONSOLE_URL), "
    "or -e server=NAME with --cloud to ask the cloud for one"
)


@dataclass(frozen=True)
class OpenParams:
    # Null is accepted here so that a missing URL gets the message below, not a type error.
    url: Text | None = doc(
        "console URL, token included: ws:// or wss:// serial console; vnc://, vnc+ws(s):// or a noVNC "
        "http(s) page URL for a VNC console"
    )
    password: Secret | None = doc("VNC password (from secrets.*), for a VNC console that asks for one",
                                  default=None)
    kind: Literal["serial", "vnc"] | None = doc(
        "the console this playbook drives; a URL of the other kind is refused before anything is typed",
        default=None)


def _url_fits(values: Mapping[str, object], config: Config) -> list[str]:
    from recovery.channels import console_url_problem

    url, kind = values.get("url"), values.get("kind")
    if isinstance(url, Unknown) or isinstance(kind, Unknown):
        return []
    if not url:
        return [NO_URL]
    problem = console_url_problem(cast(Text, url), cast("str | None", kind))
    return [problem] if problem else []


def screenshot(ctx: StepContext, moment: str) -> None:
    """Save the console's screen in the run journal, if it is one with pixels (VNC), and list it in the report.

    A VNC console shows no text we can read; its screenshots are the evidence of what happened.
    """
    from recovery.channels import Screen

    channel = ctx.require_console().channel
    if isinstance(channel, Screen):
        path = ctx.journal.path(f"screen-{len(ctx.report.screenshots) + 1}-{moment}.png")
        channel.screenshot(path)
        ctx.report.screenshots.append(f"{moment}: {path}")


@step(
    "console.open",
    params=OpenParams,
    outputs={"url": "the console URL, masked",
             "screen": "how a VNC screen is read (its font and grid), 'blind' where no font reads it; null on a "
                       "console of text"},
    repeatable=True,  # a connection does not survive the process; --resume reopens it
    retryable=True,
    check=_url_fits,
)
def open_console(ctx: StepContext, params: OpenParams) -> Outputs:
    """Connect to the VM's console."""
    from recovery.channels import channel_for
    from recovery.channels.dialogue import ConsoleSession

    problem = _url_fits({"url": params.url, "kind": params.kind}, ctx.config)
    if problem or params.url is None:
        raise StepError(problem[0] if problem else NO_URL)
    if ctx.shared.console is not None:
        ctx.shared.console.channel.close()
        ctx.shared.console = None
    channel = channel_for(params.url, password=params.password)
    ctx.waiting_for("the console to answer")
    channel.open(timeout=min(ctx.remaining(), 30.0))
    session = ConsoleSession(channel, ctx.journal.transcript)
    ctx.shared.console = session
    ctx.defer("closed the console", channel.close)
    return {"url": masked_url(params.url), "screen": _screen_reading(channel)}


def _screen_reading(channel: object) -> str | None:
    """How the console's screen is read, for the report: a VNC screen is read by a font, or typed at blind."""
    from recovery.channels import Screen
    from recovery.channels.screen import ScreenText

    if not isinstance(channel, Screen):
        return None
    screen = getattr(channel, "screen", None)
    if not isinstance(screen, ScreenText):
        return "blind"
    return f"{screen.font}, {screen.columns}x{len(screen.rows)}"


@dataclass(frozen=True)
class LoginParams:
    user: str = doc("user to log in as", check=checks.login_name)
    password: Secret | None = doc(
        "console password (from secrets.*); none if the console is already logged in", default=None
    )
    timeout: float | None = doc("seconds to reach a shell (default: console.login_timeout)", default=None)
    logout: bool = doc("log out when the run ends: a console left logged in is open to anyone who reaches it",
                       default=True)


@step(
    "console.login",
    params=LoginParams,
    outputs={"user": "the user whose shell the console shows", "already_logged_in": "true if no password was typed"},
    repeatable=True,
)
def login(ctx: StepContext, params: LoginParams) -> Outputs:
    """Log in on the console (or find a shell already open), and confirm the user.

    The logout is registered before the first key: a login that fails after a shell was reached
    (another user's shell that would not exit, Ctrl-C while it waits for `id -un`) must not leave
    that shell open. It does nothing where no shell may be open (`ConsoleSession.shell_may_be_open`).
    """
    session = ctx.require_console()
    timeout = min(params.timeout or ctx.config.console.login_timeout, ctx.remaining())
    ctx.waiting_for("a shell on the console (login prompt, password, shell prompt)")
    if params.logout:
        ctx.defer("logged out of the console", session.logout)
    screenshot(ctx, "before-login")
    result = session.login(params.user, params.password, timeout)
    screenshot(ctx, "after-login")
    if result.logged_out_other_user:
        ctx.report.notes.append(f"the console was logged in as {result.logged_out_other_user}; logged it out")
    if result.user != params.user:
        ctx.report.notes.append(f"the console shell's user is {result.user!r}, the same account as {params.user!r}")
    if result.already_logged_in:
        # Someone left a shell open on the console: worth knowing in an incident, and no password was used.
        ctx.report.notes.append(f"the console was found already logged in as {result.user}: no password was typed")
    return {"user": result.user, "already_logged_in": result.already_logged_in}
