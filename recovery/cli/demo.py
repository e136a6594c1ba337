"""`recovery demo`: a whole recovery against the built-in lab, with nothing but this machine.

It starts the lab (console password from RECOVERY_CONSOLE_PASSWORD, else random),
runs the same serial- or VNC-console playbook an operator would run
against a cloud VM (host key pinned from the lab, password from the lab's file),
shows that the lab's old key still logs in, prints the report and stops the lab,
whatever happened: a failure, Ctrl-C, SIGTERM or SIGHUP (exit 130 for the last three).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from recovery.errors import EXIT_OK, EXIT_USAGE, RecoveryError

if TYPE_CHECKING:
    from recovery import lab

APT_PACKAGES = "openssh-server openssh-client util-linux login"


def missing_prerequisites() -> list[str]:
    """What the lab needs that this machine lacks, in words an operator can act on."""
    problems = []
    for tool in ("sshd", "ssh-keygen", "agetty", "useradd"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            problems.append(f"{tool} is not installed")
    try:
        import websockify  # noqa: F401
    except ImportError:
        problems.append("websockify is not installed (pip install 'recovery[lab]')")
    return problems


def run_demo(root: Path | None = None, console: str = "serial", *, quiet: bool = False) -> int:
    """Lab up, recover through the `console` ("serial" or "vnc"), verify, report, lab down.

    `quiet` (`-q`) keeps the report, the summary line and errors, and drops the lab's
    chatter and the progress lines. Returns the exit code of the recovery.
    """
    import recovery.api
    from recovery import PLAYBOOKS_DIR, lab
    from recovery.engine.config import Config, JournalConfig, KeysConfig
    from recovery.engine.playbook import load_playbook
    from recovery.engine.report import exit_code, summary_line
    from recovery.lab import vnc as lab_vnc
    from recovery.safety.redact import Secret, masked_url

    problems = missing_prerequisites()
    if console == "vnc":
        try:
            lab_vnc.require_tools()
        except RecoveryError as exc:
            problems.append(str(exc))
    if problems:
        print("the demo cannot start: " + "; ".join(problems), file=sys.stderr)
        print(f"install them with: apt-get install -y --no-install-recommends {APT_PACKAGES}", file=sys.stderr)
        return EXIT_USAGE
    base = Path(tempfile.mkdtemp(prefix="recovery-demo-", dir=root))
    base.chmod(0o755)  # sshd, as the lab user, must traverse it to the lab home
    lab_dir = base / "lab"

    def say(line: str) -> None:
        if not quiet:
            print(line, file=sys.stderr, flush=True)

    say(f"starting the lab in {lab_dir} ...")
    chosen = os.environ.get("RECOVERY_CONSOLE_PASSWORD")  # else the lab makes a random one
    try:
        # Inside the try: a SIGTERM during lab up still ends in lab down.
        info = lab.up(lab_dir, password=Secret(chosen, "<console_password>") if chosen else None, console=console)
        console_url = info.url_of(console)
        say(f"lab VM: console {masked_url(console_url)}, ssh {info.ssh_host}:{info.ssh_port}, user {info.user}")
        playbook = load_playbook(PLAYBOOKS_DIR / f"restore-access-{console}.yaml")
        inputs = {
            "console_url": console_url,
            "ssh_host": info.ssh_host,
            "ssh_port": info.ssh_port,
            "user": info.user,
            "host_key_fingerprint": info.host_key_fingerprint,
        }
        secrets = {"console_password": info.console_password()}
        config = Config(journal=JournalConfig(dir=base / "runs"), keys=KeysConfig(dir=base / "keys"))
        try:
            report = recovery.api.run(
                playbook, inputs, secrets, config=config,
                progress=say,
            )
        except recovery.api.RunInterrupted as interrupted:
            report = interrupted.report
        print(report.to_markdown())
        print(summary_line(report), file=sys.stderr)
        status = exit_code(report)
        if status == EXIT_OK:
            say(_check_old_key(info))
        return status
    except RecoveryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        lab.down(lab_dir)
        say(f"lab stopped; keys and journal kept in {base}")


def _check_old_key(info: lab.LabInfo) -> str:
    """The recovery must not have broken the keys that were there before: a refused old key raises."""
    from recovery.ssh.keys import load_keypair
    from recovery.ssh.verifier import ParamikoVerifier, SSHTarget

    target = SSHTarget(info.ssh_host, info.ssh_port, info.user, host_key_fingerprint=info.host_key_fingerprint)
    result = ParamikoVerifier().verify(target, load_keypair(Path(info.old_key_path), None), timeout=10)
    return f"the lab's old key {result.key_fingerprint} still logs in as {result.remote_user}"
