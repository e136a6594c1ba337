"""bootloader.install: the key installed from a root shell that GRUB boots, with no password at all.

The last resort, for a VM with no guest agent and no console password: reset it, stop GRUB from
power-on (ESC: a hidden menu with `timeout=0` stops no other way), open the default entry's
editor, append `init=/bin/sh` to its kernel line (found by reading the editor, `recovery.channels.grub`),
boot it once (the edit is not saved), and at the root shell run the install script as the user
(`recovery.guest.build_root_install_script`: owner from /etc/passwd, relabel where SELinux is on,
sync, / read-only again), then reset it: it boots normally (nothing else runs, all is written).
Two boots; the SSH login after the second proves the key.

`quiet`, `splash` and the `console=` arguments are left as they are: removing words from the middle
of a line is the edit that can go wrong, `console=` must stay for the shell to be on the serial
port, and `init=` given last is the one the kernel takes.

The console is serial (GRUB's terminal replayed as text) or VNC (GRUB's VGA screen read by glyphs,
`recovery.channels.grub_vnc`): the same menu and editor reading, the same keys. On VNC the shell
comes up on the VGA console (the last `console=` of the kernel line must be `tty0`, as it is where
the VNC console is the VM's console).

A reset that restarts the VM's process (Nova's hard reboot under libvirt) closes the console: it is
opened again while GRUB starts (`_stop_grub`).

Refused before anything changes without `allow_reboot=true`, or on a VNC console no font reads;
refused on the VM (and the VM reset to boot normally) where GRUB asks for a password, draws in a
font no reader knows, or the root file system asks for a passphrase.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from recovery.engine import checks
from recovery.engine.config import Config
from recovery.engine.context import StepContext
from recovery.engine.registry import Outputs, doc, step
from recovery.engine.templating import Unknown
from recovery.errors import (
    ChannelClosed,
    ChannelError,
    CloudError,
    GuestCommandError,
    KeyGenerationError,
    StepError,
)

if TYPE_CHECKING:
    from recovery.channels.dialogue import ConsoleSession
    from recovery.channels.grub import GrubConsole, Menu

NEEDS_REBOOT_CONSENT = (
    "is not true: the boot loader route resets the VM twice (whatever runs on it is cut off, as by the power "
    "button); give -e allow_reboot=true to accept that"
)
NO_POWER = (
    "nothing can reset the VM: give -e power=qmp+unix:///path/to/qmp.sock (QEMU's QMP socket), -e "
    "power=ctrl-alt-del (sent over a VNC console), or -e server=NAME with --cloud (Nova's hard reboot)"
)
KERNEL_ARGUMENT = "init=/bin/sh"
# What a boot may stop at instead of the root shell: the route cannot go on from there.
ENCRYPTED_ROOT = re.compile(r"Please (?:unlock disk|enter passphrase)|Enter passphrase for|cryptsetup:")
INITRAMFS_SHELL = re.compile(r"\(initramfs\) ?$|ALERT! .* does not exist|dracut Warning: Could not boot", re.M)
KERNEL_PANIC = re.compile(r"Kernel panic - not syncing[^\n]*")
ROOT_PROMPT = re.compile(r"[^\n]{0,40}# ?")


def _consent(value: bool) -> str | None:
    return None if value else NEEDS_REBOOT_CONSENT


def _power(value: str) -> str | None:
    from recovery.power import power_url_problem

    return power_url_problem(value) if value else None


def _power_given(values: Mapping[str, object], config: Config) -> list[str]:
    power, server = values.get("power"), values.get("server")
    if isinstance(power, Unknown) or isinstance(server, Unknown):
        return []
    return [] if power or server else [NO_POWER]


def _public_key(value: str) -> str | None:
    from recovery.ssh.keys import parse_public_line

    try:
        parse_public_line(value)
    except KeyGenerationError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class BootParams:
    user: str = doc("the VM user whose authorized_keys gets the key", check=checks.login_name)
    key: str = doc("the public key line to add", check=_public_key)
    allow_reboot: bool = doc("must be true: the VM is reset twice", check=_consent)
    power: str | None = doc("qmp+unix:///path/to/qmp.sock: QEMU's QMP socket, to reset a VM run directly by QEMU; "
                            "ctrl-alt-del: the keys sent over the VNC console (a reboot the system performs)",
                            default=None, check=_power)
    server: str | None = doc("the cloud server's ID (with --cloud): reset by Nova's hard reboot", default=None)
    grub_timeout: float = doc("seconds from the reset to GRUB's menu", default=90.0)
    boot_timeout: float = doc("seconds from GRUB to the root shell", default=300.0)


def preview(params: BootParams) -> list[str]:
    return [
        f"reset the VM ({_reset(params)})",
        "press ESC from power-on until GRUB's menu shows; `e` on the default entry",
        f"move to the kernel line by reading the editor; Ctrl-E; type ' {KERNEL_ARGUMENT}'; Ctrl-X (not saved)",
        f"at the root shell: the install script as {params.user} (owner from /etc/passwd), relabel where SELinux "
        "is on, sync, / read-only",
        "reset the VM again: it boots normally",
    ]


@step(
    "bootloader.install",
    params=BootParams,
    outputs={
        "kernel_line": "GRUB's kernel line as booted once (with init=/bin/sh); not saved",
        "added": "true if the key was appended, false if it was already there",
        "backup": "path of the backup of authorized_keys on the VM, or null",
        "relabel": "off, or autorelabel where SELinux is on (the next boot relabels)",
        "shell_seconds": "from the reset to the root shell",
    },
    repeatable=True,  # idempotent on the VM: the key is added only if absent
    preview=preview,
    check=_power_given,
)
def install(ctx: StepContext, params: BootParams) -> Outputs:
    """Reset the VM, boot it once with init=/bin/sh from GRUB, install the key as root, reboot normally."""
    from recovery.channels import Screen
    from recovery.channels.grub import GrubConsole
    from recovery.guest import build_install_script, build_root_install_script, explain_exit, parse_report
    from recovery.power import NovaPower, PowerControl, power_for

    if not params.allow_reboot:
        raise StepError(f"allow_reboot {NEEDS_REBOOT_CONSENT}")
    session = ctx.require_console()
    grub = GrubConsole(session.channel, ctx.journal.transcript)  # refuses a screen no font reads, before the reset
    power: PowerControl
    if params.power:
        power = power_for(params.power, session.channel)
    elif params.server:
        power = NovaPower(ctx.require_cloud(), params.server)
    else:
        raise StepError(NO_POWER)
    nonce = secrets.token_hex(4)
    # QEMU's VNC server types 10 ms a key event: on a screen, the short command and the facts a report needs
    # (measured on the test VM: 155 s for the full script, a third of it for the compact one).
    facts: Literal["compact"] | bool = "compact" if isinstance(session.channel, Screen) else True
    digest = hashlib.sha256(f"{params.key}\n".encode()).hexdigest()
    script = build_root_install_script(
        build_install_script(params.key, sha256=digest, nonce=nonce, run_tag=ctx.run_id, facts=facts), params.user)

    state = {"normal": False}

    def boot_normally() -> None:
        # Whatever happened after the first reset, the VM must not stay in GRUB or in a root shell.
        if not state["normal"]:
            power.reset(30.0)

    ctx.waiting_for("GRUB's menu after the reset")
    began = time.monotonic()
    power.reset(min(60.0, ctx.remaining()))
    ctx.defer(f"reset the VM to boot normally ({power.describe()})", boot_normally)
    ctx.report.vm_changes.append(f"reset the VM ({power.describe()})")
    grub, menu = _stop_grub(ctx, params, session, grub, after=f"the reset ({power.describe()})")
    ctx.journal.event("grub_menu", entries=list(menu.entries), selected=menu.selected,
                      seconds=round(time.monotonic() - began, 1))
    ctx.waiting_for("GRUB's editor")
    editing = time.monotonic()
    grub.edit(min(30.0, ctx.remaining()))
    before, after = grub.append_to_kernel_line(KERNEL_ARGUMENT, min(60.0, ctx.remaining()))
    ctx.journal.event("grub_edit", before=before, after=after, keys=grub.keys,
                      seconds=round(time.monotonic() - editing, 1))
    grub.boot()
    booting = time.monotonic()
    ctx.waiting_for("the root shell (init=/bin/sh)")
    _wait_for_root_shell(session, min(params.boot_timeout, ctx.remaining()))
    shell_seconds = round(time.monotonic() - began, 1)
    acknowledged = grub.handed_over(min(10.0, ctx.remaining()))
    ctx.journal.event("root_shell", boot_seconds=round(time.monotonic() - booting, 1), since_reset=shell_seconds,
                      keys_acknowledged=acknowledged)
    installing = time.monotonic()
    ctx.report.notes.append(
        f"route: the boot loader; GRUB's default entry ({_entry(menu)}) booted once with {KERNEL_ARGUMENT} "
        f"(the edit is not saved), root shell {shell_seconds} s after the reset")
    result = session.run_script(list(script.lines), delimiter=_delimiter(nonce), nonce=nonce,
                                timeout=min(ctx.config.console.command_timeout, ctx.remaining()))
    report = parse_report(result.output, nonce)
    ctx.journal.event("root_install", status=result.status, facts=[list(fact) for fact in report.facts],
                      seconds=round(time.monotonic() - installing, 1))
    last = dict(report.facts)
    code = report.exit_code if report.exit_code is not None else result.status
    if code != 0:
        raise GuestCommandError(
            f"the install script run as root (init=/bin/sh) for {params.user} failed (exit {code}): "
            f"{explain_exit(code) if code is not None else 'no status'}. The VM is reset to boot normally",
            transcript_tail=session.tail())
    # Nothing else runs, / is synced and read-only: a reset loses nothing, and every power control has one.
    ctx.waiting_for("the reset into the normal boot")
    power.reset(min(60.0, max(ctx.remaining(), 5.0)))
    state["normal"] = True
    ctx.report.vm_changes.append(f"booted once with {KERNEL_ARGUMENT} from GRUB's editor (not saved)")
    ctx.report.vm_changes.append(
        f"installed the key as {params.user} (uid:gid {last.get('owner', '?')} from /etc/passwd, "
        f"through {last.get('switch', '?')})")
    if report.backup:
        ctx.report.vm_changes.append(f"backed up authorized_keys to {report.backup}")
    ctx.report.vm_changes.append("appended the new key to ~/.ssh/authorized_keys" if report.added
                                 else "the new key was already in authorized_keys")
    relabel = last.get("relabel", "off")
    if relabel == "autorelabel":
        ctx.report.vm_changes.append("SELinux is on: /.autorelabel makes the next boot relabel (and reboot once more)")
    ctx.report.vm_changes.append("synced, / remounted read-only, rebooted normally")
    if facts is True:  # the compact facts have no snapshots
        ctx.report.authorized_keys = {"before": report.before_summary(), "after": report.after_summary()}
    return {"kernel_line": after.strip(), "added": report.added, "backup": report.backup, "relabel": relabel,
            "shell_seconds": shell_seconds}


def _stop_grub(ctx: StepContext, params: BootParams, session: ConsoleSession, grub: GrubConsole,
               after: str) -> tuple[GrubConsole, Menu]:
    """GRUB's menu after the reset, through a console that the reset may close.

    Nova's hard reboot under libvirt destroys the domain and creates it again: the new QEMU process
    has a new console, and Nova's proxy closes ours. The console is then opened again and the ESCs
    go on, the same URL for a direct console, a fresh one from Nova for a server (the old token may
    name a port the new process does not have). Until the new domain runs, Nova may refuse the URL
    and the proxy the connection: tried again every RECONNECT_INTERVAL until `grub_timeout`.
    """
    deadline = time.monotonic() + min(params.grub_timeout, ctx.remaining())
    while True:
        try:
            return grub, grub.stop(max(deadline - time.monotonic(), 0.1), after=after)
        except ChannelClosed as closed:
            ctx.journal.event("console_closed", after=after)
            grub = _reopen(ctx, params, session, deadline, closed)


RECONNECT_INTERVAL = 0.5


def _reopen(ctx: StepContext, params: BootParams, session: ConsoleSession, deadline: float,
            closed: Exception) -> GrubConsole:
    """The console again, as `_stop_grub` says: a GRUB console on it, and `session` switched over to it."""
    from recovery.channels import Screen, channel_for
    from recovery.channels.grub import GrubConsole

    ctx.waiting_for("the console again: the reset closed it")
    last: Exception = closed
    while time.monotonic() < deadline:
        channel = session.channel
        try:
            if params.server and ctx.shared.cloud is not None:
                cloud = ctx.shared.cloud
                kind = "novnc" if isinstance(channel, Screen) else "serial"
                channel = channel_for(cloud.console_url(cloud.server_state(params.server), kind))
            channel.close()
            channel.open(timeout=max(min(10.0, deadline - time.monotonic()), 0.1))
        except (ChannelError, CloudError) as exc:
            last = exc
            time.sleep(RECONNECT_INTERVAL)
            continue
        if channel is not session.channel:
            session.channel = channel
            ctx.defer("closed the console opened again after the reset", channel.close)
        ctx.journal.event("console_reopened")
        return GrubConsole(channel, ctx.journal.transcript)
    raise ChannelError(f"the reset closed the console and it could not be opened again within "
                       f"{params.grub_timeout:.0f} s: {last}") from last


def _reset(params: BootParams) -> str:
    from recovery.power import CTRL_ALT_DEL

    if params.power == CTRL_ALT_DEL:
        return "Ctrl-Alt-Del over the VNC console: the running system reboots itself"
    return f"QMP {params.power}" if params.power else f"Nova hard reboot of {params.server}"


def _entry(menu: Menu) -> str:
    return menu.entries[menu.selected] if menu.selected is not None else "the first"


def _delimiter(nonce: str) -> str:
    from recovery.guest import heredoc_delimiter

    return heredoc_delimiter(nonce)


def _wait_for_root_shell(session: ConsoleSession, timeout: float) -> None:
    """Until a root shell answers `id -un` with root; refuse what the boot stops at instead."""
    from recovery.channels.grub import BootLoaderRefused
    from recovery.errors import ChannelTimeout

    deadline = time.monotonic() + timeout
    events = {"passphrase": ENCRYPTED_ROOT, "initramfs": INITRAMFS_SHELL, "panic": KERNEL_PANIC}
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ChannelTimeout(f"no root shell on the console within {timeout:.0f} s of booting with "
                                 f"{KERNEL_ARGUMENT}", transcript_tail=session.tail())
        name, match = session.expect(events, remaining, prompts={"root prompt": ROOT_PROMPT})
        if name == "passphrase":
            raise BootLoaderRefused(
                f"the root file system is encrypted (the boot asks: {match.group(0)!r}): without its passphrase "
                "no shell can read it. Use the guest agent or rescue mode with the passphrase; the VM is reset "
                "to boot normally", transcript_tail=session.tail())
        if name == "initramfs":
            raise BootLoaderRefused(
                "the boot stopped in the initramfs before the root file system was mounted "
                f"({match.group(0).strip()!r}): {KERNEL_ARGUMENT} cannot help there; the VM is reset to boot "
                "normally", transcript_tail=session.tail())
        if name == "panic":
            raise StepError(f"the kernel panicked booting with {KERNEL_ARGUMENT}: {match.group(0)!r}; the VM is "
                            "reset to boot normally", transcript_tail=session.tail())
        try:
            who = session.identity(min(10.0, max(deadline - time.monotonic(), 1.0)))
        except ChannelTimeout:
            continue  # a boot message that looked like a prompt: wait for the real one
        if who == "root":
            return
        raise StepError(f"the shell that booted is {who!r}'s, not root's: {KERNEL_ARGUMENT} did not take effect",
                        transcript_tail=session.tail())

