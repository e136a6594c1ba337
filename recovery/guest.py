"""The script typed into the VM that appends a public key to ``~/.ssh/authorized_keys``.

The script is data (`GuestScript`): a tuple of lines, where a line holding part of a
download URL is a `Secret`, so a dry run or a log shows it masked and only the
channel driver sends the raw text. The caller types it as a quoted here-document,
``sh <<'RECOVERY_SCRIPT_<nonce>'`` ... ``RECOVERY_SCRIPT_<nonce>`` (`heredoc_delimiter`),
because a here-document is collected whole before ``sh`` starts: a console that
drops the last lines leaves a shell waiting for the delimiter, not half a script run.

What the text must survive, and how it does:

* bash, dash and busybox ash alike: POSIX sh only; no ``local``, no ``[[``, no ``$'..'``,
  and no ``[!..]`` bracket negation.
* an interactive shell reading the here-document: printable ASCII only, no ``!`` (history
  expansion in bash and tcsh; a ``!`` inside a value is produced at run time with
  ``printf '\\041'``), no tabs (completion), no line starting with ``~`` (ssh escapes),
  every line under 1000 characters (busybox line editing truncates at 1024, the
  canonical tty at 4095); long values are split over several ``k="$k"'...'`` lines.
* the console echoing what is typed: facts are printed with the nonce taken from a
  variable, so the literal ``RCV-<nonce>`` never appears in the echo and a grep for it
  finds only real output.
* commands reading stdin: ``sh`` reads the script from its stdin, so anything reading stdin
  would swallow the rest of the script. The whole script is one ``{ ... } </dev/null``
  group, parsed completely before it runs and run with stdin closed.

The script never loses data: it touches ``authorized_keys`` only once the key is
verified (creating a missing ``~/.ssh`` is the one change before that), copies it aside
(``cp -p``) first, adds a missing final newline before appending (a bare ``>>`` would glue
the new key onto the last one), appends only if the exact line is absent, and checks the
line is there afterwards. It never uses ``chown``: it runs as the user whose ``~/.ssh`` it
repairs (switch user first, for example ``sudo -u alice -H sh <<'...'``), so what it
creates is owned by that user, and appending or ``chmod`` keeps an existing file's owner.
Changing another user's files as root is a different operation, with different risks,
that this script does not do; `build_mounted_install_script` (a rescue system writing onto the
server's mounted disk) does it, with rules of its own (see there), around the same append.

Facts come back as ``RCV-<nonce> name=value`` lines (`parse_report`), in this order:
``ssh_dir_created``, ``home_writable_by_others`` (sshd's StrictModes refuses keys then;
reported, not changed), ``fingerprints`` (listed|unavailable: is there ssh-keygen),
``sshd_config`` (sshd-T|files|unreadable: where the next two were read) with
``sshd_authorized_keys_file`` and ``sshd_authorized_keys_command`` (where sshd looks for keys:
a verify failure can then name a non-default file or an AuthorizedKeysCommand), the
``before_*`` snapshot (``dir_mode``, ``sha256``, ``lines``, ``mode``, one ``before_key`` per
key), ``source`` (typed|wget|curl), ``received_sha256``, ``checksum``
(verified|unavailable), ``backup``, ``newline_added``, ``added``
(yes|already-present), ``selinux``, the ``after_*`` snapshot, and ``exit``; a failure
prints ``error=<slug>`` and ``exit=<code>`` instead of what would have followed. The exit
status is one of `ExitCode` (`explain_exit`).

A console that shows no text (VNC) cannot give the facts back, and there every character is
typed at the keyboard's pace. So `build_install_script(..., facts=False)` leaves out the lines
that only report (`_Fact`): the script is less than half as long and does exactly the same to the
files, with the same exit statuses. A VNC console whose screen is read gets `facts="compact"`: the
short script plus the few facts a report needs (``ssh_dir_created`` when it was, ``checksum``,
``backup``, ``newline_added`` when it was, ``added``, and ``error``/``exit`` on a failure), a
handful of lines that fit on one screen; the status marker says the rest.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal

from recovery.errors import GuestCommandError, KeyGenerationError
from recovery.safety.redact import MASK, Secret, reveal, scrub_all

__all__ = [
    "KEY_TYPES",
    "USER_PATH",
    "ExitCode",
    "GuestScript",
    "InstallReport",
    "KeyFilesReport",
    "KeyLine",
    "LockExitCode",
    "MountedExitCode",
    "RemoveExitCode",
    "RemoveReport",
    "RemoveSpec",
    "ScriptStatus",
    "as_user_argv",
    "blob_fingerprints",
    "build_install_script",
    "build_key_files_script",
    "build_lock_script",
    "build_mounted_install_script",
    "build_remove_script",
    "build_root_install_script",
    "explain_exit",
    "explain_lock_exit",
    "explain_mounted_exit",
    "explain_remove_exit",
    "heredoc_delimiter",
    "key_blob",
    "normalize_fingerprint",
    "parse_key_files_report",
    "parse_lock_status",
    "parse_remove_report",
    "parse_report",
    "plain_user",
    "run_as",
]

KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)
"""Public key types sshd accepts in authorized_keys today (DSA is gone since OpenSSH 9.8)."""

MAX_LINE = 999
"""Longest script line: busybox ash's line editor keeps 1024 characters, a tty 4095."""

_CHUNK = 200  # a long key or URL is typed as several lines of at most this many characters
_NONCE = re.compile(r"[A-Za-z0-9_-]{4,64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# An OSC (a window title) never spans lines: a stray ESC ] must not swallow the fact lines after it.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b\r\n]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


class ScriptStatus(IntEnum):
    """An exit status of one of the guest scripts; its name, as a slug, is what the script prints."""

    @property
    def slug(self) -> str:
        """The word the script prints as ``error=``, readable on the console as it is."""
        return self.name.lower().replace("_", "-")


class ExitCode(ScriptStatus):
    """Exit status of the install script. Codes start at 10 to stay clear of the shell's own
    (1 generic, 2 syntax error, 126/127 command not runnable or missing, 128+N signal N)."""

    OK = 0
    NO_SSH_DIR = 10
    NO_TEMP_FILE = 11
    DOWNLOAD_FAILED = 12
    NO_DOWNLOADER = 13
    CHECKSUM_MISMATCH = 14
    TYPED_KEY_ALTERED = 15
    NO_CHECKSUM_TOOL = 16
    BACKUP_FAILED = 17
    WRITE_FAILED = 18
    CHMOD_FAILED = 19
    NO_SUCH_USER = 20
    CANNOT_SWITCH_USER = 21
    # The root form (`build_root_install_script`) only: before the user's script runs.
    ROOT_READ_ONLY = 22


_UNCHANGED = "authorized_keys was not changed"
_EXPLANATIONS: dict[int, str] = {
    ExitCode.OK: "the key is in authorized_keys and the modes are fixed",
    ExitCode.NO_SSH_DIR: (
        "HOME is unset or missing, or ~/.ssh could not be created (is it a file, "
        f"or is HOME not writable by the user?); {_UNCHANGED}"
    ),
    ExitCode.NO_TEMP_FILE: (
        "mktemp could not create a temporary file in ~/.ssh (disk full or read-only?); "
        + _UNCHANGED
    ),
    ExitCode.DOWNLOAD_FAILED: (
        "wget/curl could not download the key (no route from the VM, the URL expired or was "
        f"already used, or an HTTP error); {_UNCHANGED}"
    ),
    ExitCode.NO_DOWNLOADER: (
        "the VM has neither wget nor curl, so the key cannot be downloaded: type it in instead; "
        f"{_UNCHANGED}"
    ),
    ExitCode.CHECKSUM_MISMATCH: (
        "the downloaded key's sha256 did not match: the URL served something else; "
        f"{_UNCHANGED}"
    ),
    ExitCode.TYPED_KEY_ALTERED: (
        "the typed key's sha256 did not match: the console dropped or changed characters "
        f"(type more slowly); {_UNCHANGED}"
    ),
    ExitCode.NO_CHECKSUM_TOOL: (
        "the VM has no sha256sum, busybox, shasum or openssl to check the downloaded key, and "
        f"an unchecked download is not installed: type the key in instead; {_UNCHANGED}"
    ),
    ExitCode.BACKUP_FAILED: (
        f"authorized_keys could not be copied to a backup (disk full?), so {_UNCHANGED}"
    ),
    ExitCode.WRITE_FAILED: (
        "writing to authorized_keys failed, or the line did not stick (disk full, read-only, "
        "not the user's file, or a link to /dev/null); the backup printed as backup= holds the "
        "previous content"
    ),
    ExitCode.CHMOD_FAILED: (
        "the key was written but chmod 700 ~/.ssh / 600 authorized_keys failed (not the "
        "user's files?), so sshd may still refuse the key"
    ),
    ExitCode.NO_SUCH_USER: (
        f"the VM has no such user in /etc/passwd (check -e user; a directory user has no local entry); {_UNCHANGED}"
    ),
    ExitCode.ROOT_READ_ONLY: f"the root file system could not be remounted read-write; {_UNCHANGED}",
    ExitCode.CANNOT_SWITCH_USER: (
        "the console's shell is another user's, neither root nor allowed `sudo` without a password, so the "
        f"script could not run as the user; {_UNCHANGED}"
    ),
    2: "sh reported a syntax error: the script probably arrived damaged through the console",
    126: "a command in the script could not be executed",
    127: "a command the script needs was not found in the VM",
}


def explain_exit(code: int) -> str:
    """One sentence, for a tired human, about what the install script's exit status means.

    Args:
        code: the script's exit status, as read from the console marker or ``exit=``.
    Returns:
        the explanation; codes the script never chooses are explained generically.
    """
    return _explained(_EXPLANATIONS, code, "read the console output")


def _explained(table: Mapping[int, str], code: int, where: str) -> str:
    """The table's sentence for `code`, else a killing signal or an unexpected status, and `where` to look."""
    if code in table:
        return table[code]
    if code > 128:
        return f"the script was killed by signal {code - 128} before it finished"
    return f"the script failed with unexpected exit status {code}; {where}"


def heredoc_delimiter(nonce: str) -> str:
    """The word ending the here-document around the script; no script line ever equals it."""
    return f"RECOVERY_SCRIPT_{_check_nonce(nonce)}"


@dataclass(frozen=True)
class GuestScript:
    """The install script: masked lines for people and logs, raw lines for the wire.

    Construction checks every line is safe to type (see the module docstring) and
    raises ValueError otherwise, so no caller can send a line that would misbehave.
    """

    lines: tuple[str | Secret, ...]
    nonce: str

    def __post_init__(self) -> None:
        _check_wire_safe(self.lines, self.nonce)

    def masked(self) -> str:
        """The script with URLs shown as ``***``: for dry runs, logs and the journal."""
        return "".join(f"{line}\n" for line in self.lines)

    def raw(self) -> str:
        """The script as typed into the VM. For the channel driver at the wire only."""
        return "".join(f"{reveal(line)}\n" for line in self.lines)


@dataclass(frozen=True)
class InstallReport:
    """What the install script reported. A field is None when the script did not get as far
    as reporting it (look at `exit_code` and `error` for where it stopped).

    ``*_sha256`` is a hex digest, ``absent`` (no file) or ``unavailable`` (no tool);
    ``*_keys`` are ``ssh-keygen -lf`` lines, empty when `fingerprints_listed` is False;
    `facts` keeps every (name, value) pair in order, for the journal.
    """

    exit_code: int | None
    error: str | None
    ssh_dir_created: bool | None
    home_writable_by_others: bool | None
    fingerprints_listed: bool | None
    before_sha256: str | None
    before_lines: int | None
    before_mode: str | None
    before_dir_mode: str | None
    before_keys: tuple[str, ...]
    source: str | None
    received_sha256: str | None
    checksum: str | None
    backup: str | None
    newline_added: bool | None
    added: bool | None
    selinux: str | None
    after_sha256: str | None
    after_lines: int | None
    after_mode: str | None
    after_dir_mode: str | None
    after_keys: tuple[str, ...]
    facts: tuple[tuple[str, str], ...] = field(repr=False)
    sshd_config: str | None = None
    sshd_authorized_keys_file: str | None = None
    sshd_authorized_keys_command: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == ExitCode.OK

    def before_summary(self) -> dict[str, str | int | list[str] | None]:
        """authorized_keys before the change, for the run report."""
        return _summary(
            self.before_sha256, self.before_lines, self.before_mode, self.before_dir_mode,
            self.before_keys,
        )

    def after_summary(self) -> dict[str, str | int | list[str] | None]:
        """authorized_keys after the change, for the run report."""
        return _summary(
            self.after_sha256, self.after_lines, self.after_mode, self.after_dir_mode,
            self.after_keys,
        )

    def sshd_summary(self) -> dict[str, str] | None:
        """Where the VM's sshd looks for keys, for the report and `diagnosis.key_lookup`; None if unseen.

        ``read_from`` is ``sshd-T`` (sshd's effective settings) or ``files`` (the configuration
        files); a value is ``default`` where nothing sets it.
        """
        if self.sshd_config not in ("sshd-T", "files") or self.sshd_authorized_keys_file is None:
            return None  # nothing readable, or no awk to read it with
        return {
            "read_from": self.sshd_config or "",
            "authorized_keys_file": self.sshd_authorized_keys_file or "default",
            "authorized_keys_command": self.sshd_authorized_keys_command or "default",
        }

    @property
    def explanation(self) -> str:
        if self.exit_code is None:
            return "the script stopped without reporting an exit status; read the console output"
        return explain_exit(self.exit_code)


_RUN_TAG = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def build_install_script(
    public_line: str,
    *,
    sha256: str,
    nonce: str,
    url: Secret | None = None,
    facts: bool | Literal["compact"] = True,
    run_tag: str | None = None,
) -> GuestScript:
    """Build the script that installs `public_line` into the user's authorized_keys.

    Args:
        public_line: one OpenSSH public key line, ``<type> <base64> [comment]``, no newline.
        sha256: hex sha256 of the key as the VM will get it: ``public_line + "\\n"`` or
            ``public_line`` exactly. With `url`, the bytes the URL serves; without, the script
            rebuilds those bytes from the typed text and checks them when it has a tool.
        nonce: 4-64 characters of ``[A-Za-z0-9_-]``, unique to this run; it names the backup
            and the here-document delimiter and tags every fact line.
        url: where the VM downloads the key (``http://`` or ``https://``); None types the
            key into the script instead.
        facts: print the facts `parse_report` reads; False for a console nobody can read;
            "compact" for only those a report needs (a read VNC screen: fewer characters to type): the
            terse one-line command (`_terse_install`) for a typed key it can carry, else the short
            script plus those facts.
        run_tag: names the backup (``authorized_keys.recovery-<run_tag>``), so every attempt of one
            run shares one backup: the file as it was before the run. None: the nonce names it.
    Returns:
        the script; facts come back as ``RCV-<nonce> name=value`` (`parse_report`).
    Raises:
        KeyGenerationError: `public_line` is not a single printable-ASCII OpenSSH public key.
        ValueError: `nonce`, `sha256` or `url` is malformed, or `sha256` is not the digest
            of `public_line`.
    """
    _check_public_line(public_line)
    _check_nonce(nonce)
    digest = sha256.lower()
    if not _SHA256.fullmatch(digest):
        raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    with_newline = hashlib.sha256(f"{public_line}\n".encode()).hexdigest()
    if digest not in (with_newline, hashlib.sha256(public_line.encode()).hexdigest()):
        raise ValueError(
            "sha256 is not the digest of public_line (with or without a final newline): "
            "the published bytes and the key line disagree"
        )
    if url is not None:
        _check_url(url)
    value = public_line if url is None else url.reveal()
    if run_tag is not None and not _RUN_TAG.fullmatch(run_tag):
        raise ValueError(f"run_tag must be 1-64 characters of [A-Za-z0-9_.-], got {run_tag!r}")
    if facts == "compact" and url is None and (terse := _terse_install(public_line, nonce, run_tag)) is not None:
        return terse
    lines: list[str | Secret | _Fact] = [
        "{",
        f"n={nonce}",
        f"w={digest}",
        f"r={run_tag or nonce}",
        *(["bang=$(printf '\\041')"] if "!" in value else []),
        *_PRELUDE,
    ]
    if url is None:
        lines += _assign("k", public_line, secret=False)
        key_format = "%s\\n" if digest == with_newline else "%s"
        lines += [
            f"kf='{key_format}'",
            _Fact("fact source typed"),
            "if digest -; then",
            f"[ \"$h\" = \"$w\" ] || {_fail(ExitCode.TYPED_KEY_ALTERED)}",
            _Fact("fact checksum verified", compact=True),
            _Fact("else fact checksum unavailable", compact=True),
            "fi",
        ]
    else:
        lines += _assign("u", url.reveal(), secret=True)
        lines += _MAKE_TEMP
        lines += _DOWNLOAD
        lines += [
            f"digest \"$t\" || {_fail(ExitCode.NO_CHECKSUM_TOOL)}",
            _Fact("fact received_sha256 \"$h\""),
            f"[ \"$h\" = \"$w\" ] || {_fail(ExitCode.CHECKSUM_MISMATCH)}",
            _Fact("fact checksum verified", compact=True),
            "k=$(cat \"$t\")",
        ]
    lines += _INSTALL
    def pick(line: _Fact) -> str | None:
        return line.line if facts is True or (facts == "compact" and line.compact) else line.blind

    chosen = (pick(line) if isinstance(line, _Fact) else line for line in lines)
    return GuestScript(lines=tuple(line for line in chosen if line is not None), nonce=nonce)


def parse_report(output: str, nonce: str) -> InstallReport:
    """Collect the install script's facts from console output.

    Noise is expected and ignored: the echoed script (which never holds the literal
    marker), prompts, ``\\r\\n`` line ends, ANSI escape sequences, other commands' output.

    Args:
        output: everything the console printed while the script ran.
        nonce: the nonce the script was built with.
    Returns:
        the facts; repeated scalar facts keep the last value.
    Raises:
        GuestCommandError: no fact line carries this nonce, so the script did not run
            (or its output was lost).
    """
    marker = re.compile(rf"RCV-{re.escape(_check_nonce(nonce))} ([a-z0-9_]+)=(.*)")
    facts: list[tuple[str, str]] = []
    for line in re.split(r"\r\n|\r|\n", _ANSI.sub("", output)):
        found = marker.search(line)
        if found:
            facts.append((found.group(1), found.group(2).rstrip()))
    facts = [expanded for fact in facts for expanded in _terse_facts(*fact)]
    if not facts:
        raise GuestCommandError(
            f"the install script printed no report line (RCV-{nonce}): it did not run, or its "
            "output was lost",
            transcript_tail=scrub_all(output.splitlines()),
        )
    last = dict(facts)

    def many(name: str) -> tuple[str, ...]:
        return tuple(value for key, value in facts if key == name)

    def flag(name: str, yes: str) -> bool | None:
        return None if name not in last else last[name] == yes

    def number(name: str) -> int | None:
        value = last.get(name, "")
        return int(value) if value.isascii() and value.isdigit() else None  # "¹".isdigit() is True

    return InstallReport(
        exit_code=number("exit"),
        error=last.get("error"),
        ssh_dir_created=flag("ssh_dir_created", "yes"),
        home_writable_by_others=flag("home_writable_by_others", "yes"),
        fingerprints_listed=flag("fingerprints", "listed"),
        before_sha256=last.get("before_sha256"),
        before_lines=number("before_lines"),
        before_mode=last.get("before_mode"),
        before_dir_mode=last.get("before_dir_mode"),
        before_keys=many("before_key"),
        source=last.get("source"),
        received_sha256=last.get("received_sha256"),
        checksum=last.get("checksum"),
        backup=None if last.get("backup", "none") == "none" else last["backup"],
        newline_added=flag("newline_added", "yes"),
        added=flag("added", "yes"),
        selinux=last.get("selinux"),
        after_sha256=last.get("after_sha256"),
        after_lines=number("after_lines"),
        after_mode=last.get("after_mode"),
        after_dir_mode=last.get("after_dir_mode"),
        after_keys=many("after_key"),
        facts=tuple(facts),
        sshd_config=last.get("sshd_config"),
        sshd_authorized_keys_file=last.get("sshd_authorized_keys_file"),
        sshd_authorized_keys_command=last.get("sshd_authorized_keys_command"),
    )


def _summary(
    sha256: str | None, lines: int | None, mode: str | None, dir_mode: str | None,
    keys: tuple[str, ...],
) -> dict[str, str | int | list[str] | None]:
    return {
        "sha256": sha256, "lines": lines, "mode": mode, "dir_mode": dir_mode, "keys": list(keys)
    }


def _fail(code: ScriptStatus) -> str:
    """The script line that ends it with `code`, printing the code's slug (every guest script defines `fail`)."""
    return f"fail {code.value} {code.slug}"


@dataclass(frozen=True)
class _Fact:
    """A script line that only reports: without facts, `blind` takes its place (or nothing); `compact`
    ones are kept in the compact variant."""

    line: str
    blind: str | None = None
    compact: bool = False


# Facts only: `kg` is ssh-keygen if there is one; `snapshot before|after` reports the state of
# ~/.ssh and authorized_keys (before: and whether others may write to the home). Every process costs
# ~0.1 s on an emulated guest, so the modes come from one `ls` (ls sorts its operands, and each is a
# prefix of the next, so its lines come in the order given; a home whose name holds a newline gets
# no mode facts) and a small regular file's lines are counted by the shell itself. `grep -c ''`
# counts the others: the same count, a last line without a newline being one.
_SNAPSHOT: tuple[str, ...] = (
    "kg=; command -v ssh-keygen >/dev/null 2>&1 && kg=ssh-keygen",
    "nl=$(printf '\\nx'); nl=${nl%x}",
    "nextline() { l=${m%%\"$nl\"*}; m=${m#\"$l\"}; m=${m#\"$nl\"}; }",
    "snapshot() {",
    "when=$1",
    "if [ \"$when\" = before ]; then set -- \"$HOME/\" \"$d/\"; else set -- \"$d/\"; fi",
    "[ -e \"$f\" ] && set -- \"$@\" \"$f\"",
    "case $HOME in *\"$nl\"*) m= ;; *) m=$(ls -ldn \"$@\" 2>/dev/null) || m= ;; esac",
    "if [ \"$when\" = before ]; then nextline",
    "case $l in '') ;; ?????w* | ????????w*) fact home_writable_by_others yes ;;",
    "*) fact home_writable_by_others no ;; esac",
    "fi",
    "nextline; [ -n \"$l\" ] && fact \"$when\"_dir_mode \"${l%% *}\"",
    "if [ -e \"$f\" ]; then",
    "if digest \"$f\"; then fact \"$when\"_sha256 \"$h\"; else fact \"$when\"_sha256 unavailable; fi",
    "nextline; [ -n \"$l\" ] && fact \"$when\"_mode \"${l%% *}\"",
    "set -f; set -- $l; set +f",
    "lc=; case $1 in -*) [ \"$5\" -le 65536 ] 2>/dev/null && lc=0 ;; esac",
    "if [ -n \"$lc\" ]; then while IFS= read -r x || [ -n \"$x\" ]; do lc=$((lc+1)); done <\"$f\"",
    "else lc=$(grep -c '' <\"$f\"); fi",
    "fact \"$when\"_lines \"$lc\"",
    "if [ -n \"$kg\" ]; then",
    "$kg -lf \"$f\" 2>/dev/null | while IFS= read -r l; do fact \"$when\"_key \"$l\"; done",
    "fi",
    "else fact \"$when\"_sha256 absent; fact \"$when\"_lines 0; fi",
    "}",
)

# Facts only: where sshd looks for keys. `sshd -T` prints the effective settings (for this user, Match
# blocks applied) where it can run: as root, and with sshd on PATH. Otherwise the configuration files
# are read in sshd's order on the systems that split it (Debian, Ubuntu, Fedora, RHEL 9:
# sshd_config.d/*.conf are included first), the first value of a keyword winning and Match blocks
# skipped. awk reads both: `sshd -T` prints the same keywords in lower case.
_SSHD_AWK = (
    "FNR==1{m=0} {l=$0; sub(/^[ \\t]+/,\"\",l); w=tolower(l); sub(/[ \\t=].*/,\"\",w); v=l; "
    "sub(/^[^ \\t=]+[ \\t]*=?[ \\t]*/,\"\",v); sub(/[ \\t]+$/,\"\",v)} w==\"match\"{m=1} m{next} "
    "w==\"authorizedkeysfile\"&&f==\"\"{f=v} w==\"authorizedkeyscommand\"&&c==\"\"{c=v} "
    "END{if(f==\"\")f=\"default\"; if(c==\"\")c=\"default\"; "
    "printf \"RCV-%s sshd_authorized_keys_file=%s\\nRCV-%s sshd_authorized_keys_command=%s\\n\", n, f, n, c}"
)
_SSHD: tuple[str, ...] = (
    f"ak='{_SSHD_AWK}'",
    "sf=; for c in /etc/ssh/sshd_config.d/*.conf /etc/ssh/sshd_config; do [ -r \"$c\" ] && sf=\"$sf $c\"; done",
    "if command -v sshd >/dev/null 2>&1 && m=$(sshd -T -C \"user=$(id -un),host=localhost,addr=127.0.0.1\" "
    "2>/dev/null); then",
    "fact sshd_config sshd-T; printf '%s\\n' \"$m\" | awk -v n=\"$n\" \"$ak\"",
    "elif [ -n \"$sf\" ]; then fact sshd_config files; awk -v n=\"$n\" \"$ak\" $sf",
    "else fact sshd_config unreadable; fi",
)

# Helpers the script defines first. `fact` prints one fact line; `fail` reports and exits
# (the EXIT trap then removes a download's temp file). `digest FILE` sets h to FILE's sha256 with
# the first tool that gives a 64-hex answer, reading stdin so no tool echoes a file name; `digest -`
# to that of the typed key's bytes (`printf "$kf" "$k"`), which need no temp file: no mktemp and no
# rm, ~0.2 s less on an emulated guest.
_HELPERS: tuple[str | _Fact, ...] = (
    _Fact("fact() { printf 'RCV-%s %s=%s\\n' \"$n\" \"$1\" \"$2\"; }", compact=True),
    _Fact("fail() { fact error \"$2\"; fact exit \"$1\"; exit \"$1\"; }", blind="fail() { exit \"$1\"; }",
          compact=True),
    "digest() {",
    "for c in sha256sum 'busybox sha256sum' 'shasum -a 256' 'openssl dgst -sha256 -r'; do",
    "if [ \"$1\" = - ]; then h=$(printf \"$kf\" \"$k\" | $c 2>/dev/null)",
    "else h=$($c <\"$1\" 2>/dev/null); fi || continue",
    "h=${h%% *}",
    "[ ${#h} -eq 64 ] || continue",
    # 64 lowercase hex digits, checked by the shell itself: a `tr` here cost a process (~80 ms on an emulated guest)
    "hx=$h; while [ -n \"$hx\" ]; do case $hx in [0123456789abcdef]*) hx=${hx#?} ;; *) continue 2 ;; esac; done",
    "return 0",
    "done",
    "h=; return 1",
    "}",
)
_PRELUDE: tuple[str | _Fact, ...] = (
    *_HELPERS,
    *map(_Fact, _SNAPSHOT),
    "umask 077",
    "trap 'exit 130' HUP INT TERM",
    f"[ -n \"$HOME\" ] && [ -d \"$HOME\" ] || {_fail(ExitCode.NO_SSH_DIR)}",
    "d=$HOME/.ssh",
    "f=$d/authorized_keys",
    "if [ -d \"$d\" ]; then",
    _Fact("fact ssh_dir_created no", blind=":"),
    f"else mkdir \"$d\" || {_fail(ExitCode.NO_SSH_DIR)}",
    _Fact("fact ssh_dir_created yes", compact=True),
    "fi",
    _Fact("if [ -n \"$kg\" ]; then fact fingerprints listed; else fact fingerprints unavailable; fi"),
    *map(_Fact, _SSHD),
    _Fact("snapshot before"),
)

# The temp file lives in ~/.ssh (0700, same file system) and goes away on any exit.
_MAKE_TEMP: tuple[str, ...] = (
    "t=",
    "trap 'rm -f \"$t\"' EXIT",
    f"t=$(mktemp \"$d/.recovery-XXXXXX\") || {_fail(ExitCode.NO_TEMP_FILE)}",
)

# wget first, curl if wget is missing or fails (busybox wget without TLS, say). Only GNU
# wget gets a timeout: busybox 1.35's wget crashes on -T. Neither names a file after the
# URL's query string, as plain `wget URL` would.
_DOWNLOAD: tuple[str | _Fact, ...] = (
    "s=",
    "if command -v wget >/dev/null 2>&1; then",
    "o=; wget --version >/dev/null 2>&1 && o='-T 30 -t 2'",
    "wget -q $o -O- \"$u\" >\"$t\" && s=wget",
    "fi",
    "if [ -z \"$s\" ] && command -v curl >/dev/null 2>&1; then",
    "curl -fsS --connect-timeout 30 -m 300 \"$u\" >\"$t\" && s=curl",
    "fi",
    "if [ -z \"$s\" ]; then",
    "command -v wget >/dev/null 2>&1 || command -v curl >/dev/null 2>&1 || "
    + _fail(ExitCode.NO_DOWNLOADER),
    _fail(ExitCode.DOWNLOAD_FAILED),
    "fi",
    _Fact("fact source \"$s\""),
)

# From here on the key in $k (and in $t) is verified. One backup per run ($r names the run): an
# earlier attempt of the same run made it, and it holds the file as it was before the run, so it
# is kept rather than replaced with already-changed content or joined by one more copy.
_APPEND: tuple[str | _Fact, ...] = (
    _Fact("b=none", compact=True),
    "if [ -e \"$f\" ]; then",
    "b=$f.recovery-$r",
    f"[ -e \"$b\" ] || cp -p \"$f\" \"$b\" || {_fail(ExitCode.BACKUP_FAILED)}",
    "fi",
    _Fact("fact backup \"$b\"", compact=True),
    "if [ -s \"$f\" ] && [ -n \"$(tail -c 1 \"$f\")\" ]; then",
    f"printf '\\n' >>\"$f\" || {_fail(ExitCode.WRITE_FAILED)}",
    _Fact("fact newline_added yes", compact=True),
    _Fact("else fact newline_added no"),
    "fi",
    "if grep -qxF -e \"$k\" \"$f\" 2>/dev/null; then",
    _Fact("fact added already-present", blind=":", compact=True),
    f"else printf '%s\\n' \"$k\" >>\"$f\" || {_fail(ExitCode.WRITE_FAILED)}",
    f"grep -qxF -e \"$k\" \"$f\" || {_fail(ExitCode.WRITE_FAILED)}",
    _Fact("fact added yes", compact=True),
    "fi",
    f"chmod 700 \"$d\" && chmod 600 \"$f\" || {_fail(ExitCode.CHMOD_FAILED)}",
)
_INSTALL: tuple[str | _Fact, ...] = (
    *_APPEND,
    _Fact("e=no-restorecon"),
    "for c in restorecon /usr/sbin/restorecon /sbin/restorecon; do",
    "command -v \"$c\" >/dev/null 2>&1 || continue",
    _Fact("if \"$c\" -R \"$d\"; then e=restored; else e=restorecon-failed; fi; break",
          blind="\"$c\" -R \"$d\"; break"),
    "done",
    _Fact("fact selinux \"$e\""),
    _Fact("snapshot after"),
    _Fact("fact exit 0"),
    "} </dev/null",
)


# The root form: a root shell with nothing else running (the kernel's `init=/bin/sh`) runs the same
# install script as the user, whose uid, gid and home come from the VM's own /etc/passwd (no name
# service is running to ask). setpriv needs no PAM session; runuser and su are the fallbacks. The
# script then runs exactly as on a console where the user is logged in, so what it creates is the
# user's and nothing is chowned. Where SELinux is configured on, the policy is not loaded in such a
# shell and restorecon cannot label: `/.autorelabel` has the next boot relabel the file system (the
# documented RHEL way; it costs one more reboot). Finally everything is synced and / is remounted
# read-only, so the reboot that follows (sysrq or a reset) loses nothing.
_ROOT_HEAD: tuple[str, ...] = (
    "fact() { printf 'RCV-%s %s=%s\\n' \"$n\" \"$1\" \"$2\"; }",
    "fail() { fact error \"$2\"; fact exit \"$1\"; exit \"$1\"; }",
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; export PATH",
    f"mount -o remount,rw / || {_fail(ExitCode.ROOT_READ_ONLY)}",
    "pw() { awk -F: -v u=\"$u\" -v i=\"$1\" '$1==u {print $i; exit}' /etc/passwd; }",
    "uid=$(pw 3); gid=$(pw 4); home=$(pw 6)",
    f"[ -n \"$uid\" ] && [ -n \"$gid\" ] || {_fail(ExitCode.NO_SUCH_USER)}",
    "fact owner \"$uid:$gid\"",
    "HOME=$home; USER=$u; LOGNAME=$u; export HOME USER LOGNAME",
    "as_user() {",
    "if command -v setpriv >/dev/null 2>&1; then fact switch setpriv; setpriv --reuid=\"$uid\" --regid=\"$gid\" "
    "--init-groups /bin/sh",
    "elif command -v runuser >/dev/null 2>&1; then fact switch runuser; runuser -u \"$u\" -- /bin/sh",
    "else fact switch su; su -s /bin/sh \"$u\"; fi",
    "}",
)
_ROOT_TAIL: tuple[str, ...] = (
    "s=$?",
    "e=off",
    "if [ -r /etc/selinux/config ] && grep -Eq '^SELINUX=(enforcing|permissive)' /etc/selinux/config; then",
    "touch /.autorelabel && e=autorelabel",
    "fi",
    "fact relabel \"$e\"",
    "sync",
    "mount -o remount,ro / 2>/dev/null && fact root ro",
    "sync",
    "exit \"$s\"",
    "} </dev/null",
)


def build_root_install_script(install: GuestScript, user: str) -> GuestScript:
    """`install` (from `build_install_script`, same nonce) wrapped for a root shell: run as `user`.

    For a shell that is root and nothing else (the boot loader route's `init=/bin/sh`): remounts /
    read-write, takes the user's uid, gid and home from /etc/passwd, runs `install` as the user,
    asks for an SELinux relabel where SELinux is on, syncs and remounts / read-only. Its facts come
    on top of the install script's: ``owner`` (uid:gid), ``switch`` (setpriv|runuser|su),
    ``relabel`` (off|autorelabel), ``root`` (ro); its own failures print ``error`` and ``exit``
    (`ExitCode.ROOT_READ_ONLY`, `ExitCode.NO_SUCH_USER`) before the install script runs.

    Raises:
        ValueError: `user` is not a plain user name.
    """
    if not _USER.fullmatch(user):
        raise ValueError(f"not a user name: {user!r}")
    inner = f"RECOVERY_USER_{install.nonce}"
    lines = ("{", f"n={install.nonce}", f"u={_quote(user)}", *_ROOT_HEAD, f"as_user <<'{inner}'",
             *install.lines, inner, *_ROOT_TAIL)
    return GuestScript(lines=lines, nonce=install.nonce)


def _assign(var: str, value: str, *, secret: bool) -> list[str | Secret]:
    """Lines that set shell variable `var` to `value`, _CHUNK characters per line.

    Each chunk is single-quoted (``'`` typed as ``'\\''``) and every ``!`` comes from
    ``$bang``, so the text is inert in any shell. A secret's lines are Secrets labelled
    with the chunk masked.
    """
    chunks = [value[i : i + _CHUNK] for i in range(0, len(value), _CHUNK)]
    lines: list[str | Secret] = []
    for index, chunk in enumerate(chunks):
        prefix = f"{var}=" if index == 0 else f'{var}="${var}"'
        line = prefix + _quote(chunk)
        lines.append(Secret(line, f"{prefix}'{MASK}'") if secret else line)
    return lines


def _quote(text: str) -> str:
    parts = ("'" + part.replace("'", "'\\''") + "'" if part else "" for part in text.split("!"))
    return '"$bang"'.join(parts)


def _check_user(user: str) -> None:
    if not _USER.fullmatch(user):
        raise ValueError(f"user must be a login name ([A-Za-z_][A-Za-z0-9_.-]*), got {user!r}")


def _check_nonce(nonce: str) -> str:
    if not _NONCE.fullmatch(nonce):
        raise ValueError(f"nonce must be 4-64 characters of [A-Za-z0-9_-], got {nonce!r}")
    return nonce


def _printable(text: str) -> bool:
    return all(" " <= char <= "~" for char in text)


def _check_public_line(line: str) -> None:
    fields = line.split(" ")
    if not line or not _printable(line):
        raise KeyGenerationError(
            "the public key must be one line of printable ASCII (no newline, tab or control "
            "character); got " + repr(line[:60])
        )
    if fields[0] not in KEY_TYPES:
        raise KeyGenerationError(
            f"the public key line must start with a key type ({', '.join(sorted(KEY_TYPES))}); "
            f"got {line[:40]!r}"
        )
    try:
        blob = base64.b64decode(fields[1] if len(fields) > 1 else "", validate=True)
    except ValueError as exc:
        raise KeyGenerationError(
            f"the public key's second field is not base64 key data: {line[:60]!r}"
        ) from exc
    name_length = int.from_bytes(blob[:4], "big")
    if blob[4 : 4 + name_length] != fields[0].encode():
        raise KeyGenerationError(
            f"the public key's data does not encode a {fields[0]} key (truncated or pasted "
            f"from another key?): {line[:60]!r}"
        )


def _check_url(url: Secret) -> None:
    raw = url.reveal()
    if not raw.startswith(("http://", "https://")) or not _printable(raw) or " " in raw:
        raise ValueError(f"the key URL must be an http(s) URL of printable ASCII, got {url}")


def _check_wire_safe(lines: Iterable[str | Secret], nonce: str) -> None:
    """Refuse any line that would misbehave when typed (see the module docstring)."""
    delimiter = heredoc_delimiter(nonce)
    marker = f"RCV-{nonce}"
    for number, line in enumerate(lines, 1):
        raw = reveal(line)
        problem = (
            "is not printable ASCII" if not _printable(raw)
            else "contains '!'" if "!" in raw
            else f"is longer than {MAX_LINE} characters" if len(raw) > MAX_LINE
            else "starts with '~'" if raw.startswith("~")
            else "equals the here-document delimiter" if raw == delimiter
            else f"contains the literal {marker}" if marker in raw
            else None
        )
        if problem:
            raise ValueError(f"script line {number} {problem}: {line}")



# ---------------------------------------------------------------------------------------------
# Run as another user, and lock a password: the password-set route (a password set through the
# guest agent, then the console). The console's shell is then the image's admin user's (root, or
# `ubuntu` on images that lock root), not necessarily the user whose key goes in.
#
# `run_as` wraps the install script so that it runs as the user whatever shell types it: the
# user's own shell runs it as it is; root switches with `runuser -u USER` (util-linux: HOME, USER
# and LOGNAME set, no PAM session, no password); another user with `sudo -n -H -u USER`, where
# sudo needs no password (the cloud images' default users). The script itself never chowns (see
# above): what it creates is the user's because it runs as the user. No other route is taken: no
# `su` (it would ask for the user's password), no sudo that prompts (the prompt would eat the
# script). It is a second here-document inside the first; its delimiter differs.
#
# `build_lock_script` locks the admin user's password again before the console is left (`passwd
# -l`, else `usermod -L`: a `!` before the hash, so no password logs in; keys still do), as root or
# through `sudo -n`, and reads the shadow field back. Where the shell can do neither it changes
# nothing and says so (`LockExitCode.NOT_PRIVILEGED`): the caller then makes the password unusable
# another way (a second password set through the cloud, to a value nobody keeps).
# ---------------------------------------------------------------------------------------------


USER_PATH = "PATH=/usr/local/bin:/usr/bin:/bin; export PATH"
"""A user's PATH for the install script run as a user other than root. The shell that switches (root's on
the console, the guest agent's) has sbin on its PATH, runuser and sudo keep it, and then the script tries
`sshd -T`, which only root can run (it reads the host keys): the failing try costs 0.4-0.6 s on an
emulated guest, and a user's script reads sshd's files anyway."""


# The guest agent's switch to the user: its argv runs the script on stdin as the user. A shell reads
# the user's /etc/passwd line itself (no process) and execs setpriv with its uid and gid, the user's
# groups, and HOME, USER, LOGNAME and SHELL as runuser sets them: runuser's PAM session costs 0.2-0.4 s
# more on an emulated guest. A user only a name service knows, or a guest without setpriv, gets
# `runuser -u USER -- /bin/sh`, which says so when the user does not exist, and a guest without runuser
# either (busybox: Alpine) `su -s /bin/sh USER`, as the boot route's root form does. The switching shell
# takes its own script from -c, so the script on stdin reaches the user's shell whole; fd 3 reads passwd.
_SWITCH = (
    'u=$1; while IFS=: read -r name x uid gid gecos home shell <&3; do [ "$name" = "$u" ] || continue; '
    "command -v setpriv >/dev/null 2>&1 || break; "
    'export HOME="$home" USER="$u" LOGNAME="$u" SHELL="$shell"; '
    'exec setpriv --reuid="$uid" --regid="$gid" --init-groups /bin/sh 3<&-; '
    'done 3</etc/passwd; command -v runuser >/dev/null 2>&1 && exec runuser -u "$u" -- /bin/sh 3<&-; '
    'exec su -s /bin/sh "$u" 3<&-'
)


def as_user_argv(user: str) -> list[str]:
    """The command that runs the script on its stdin as `user`, from a root process that is no shell (the
    guest agent's guest-exec): setpriv from the user's /etc/passwd line, else runuser, else su (see above).

    Raises:
        ValueError: `user` is not a plain login name.
    """
    _check_user(user)
    return ["/bin/sh", "-c", _SWITCH, "sh", user]


def plain_user(name: str) -> bool:
    """Whether `run_as` and `build_lock_script` take `name`: a plain login name, typed without quoting."""
    return _USER.fullmatch(name) is not None


def run_as(script: GuestScript, user: str, *, lock: str | None = None) -> GuestScript:
    """`script` run as `user`, from root's shell, a password-less sudoer's, or the user's own.

    With `lock`, the same command then locks `lock`'s password (`build_lock_script`, in a subshell of
    the console's own shell) whatever became of the install, also when it could not start, and prints
    the lock's status as `RCV-<nonce> password_lock=<LockExitCode>` (`parse_lock_status`); the
    command's exit status stays the install's. One command instead of two saves the console a round
    trip (~0.7 s on an emulated guest).

    Raises:
        ValueError: `user` or `lock` is not a plain login name.
    """
    _check_user(user)
    locking = () if lock is None else (
        "(", *build_lock_script(lock, nonce=script.nonce, uid_var="mu").lines, ")",
        "printf 'RCV-%s password_lock=%s\\n' \"$n\" \"$?\"",
    )
    inner = f"RECOVERY_AS_USER_{script.nonce}"
    lines: list[str | Secret] = [
        f"n={script.nonce}",
        f"u={user}",
        "st=",
        # A refusal records its status and falls through, so that a lock after it still runs.
        "no() { printf 'RCV-%s error=%s\\nRCV-%s exit=%s\\n' \"$n\" \"$2\" \"$n\" \"$1\"; st=$1; }",
        f"id \"$u\" </dev/null >/dev/null 2>&1 || no {ExitCode.NO_SUCH_USER.value} {ExitCode.NO_SUCH_USER.slug}",
        "cd /",  # root's home is not the user's to read
        # Who this shell is, from one `id` (uid=0(root) gid=...): each process costs ~60 ms on an emulated guest.
        "me=$(id </dev/null); mu=${me#uid=}; mu=${mu%%[(]*}; mu=${mu%% *}; mn=${me#uid=*[(]}; mn=${mn%%[)]*}",
        "if [ -n \"$st\" ]; then :",
        "elif [ \"$mn\" = \"$u\" ]; then set -- /bin/sh",
        "elif [ \"$mu\" = 0 ]; then set -- runuser -u \"$u\" -- /bin/sh",
        "elif sudo -n true </dev/null >/dev/null 2>&1; then set -- sudo -n -H -u \"$u\" /bin/sh",
        f"else no {ExitCode.CANNOT_SWITCH_USER.value} {ExitCode.CANNOT_SWITCH_USER.slug}",
        "fi",
        f"[ -n \"$st\" ] || {{ \"$@\" <<'{inner}'",
        *([] if user == "root" else [USER_PATH]),
        *script.lines,
        inner,
        "st=$?; }",
        *locking,
        "exit \"$st\"",
    ]
    return GuestScript(lines=tuple(lines), nonce=script.nonce)


def parse_lock_status(output: str, nonce: str) -> int | None:
    """The password lock's status (`LockExitCode`) that `run_as(..., lock=USER)` printed, or None if none shows."""
    marker = re.compile(rf"RCV-{re.escape(_check_nonce(nonce))} password_lock=([0-9]{{1,3}})\r?$", re.MULTILINE)
    found = marker.findall(_ANSI.sub("", output))
    return int(found[-1]) if found else None


class LockExitCode(ScriptStatus):
    """Exit status of the lock script (`build_lock_script`)."""

    OK = 0
    NOT_PRIVILEGED = 10
    LOCK_FAILED = 11


_LOCK_EXPLANATIONS: dict[int, str] = {
    LockExitCode.OK: "the password is locked (a `!` before its hash): no password logs in as that user",
    LockExitCode.NOT_PRIVILEGED: (
        "the console's shell is neither root nor allowed `sudo` without a password, so it cannot lock a password; "
        "nothing was changed"
    ),
    LockExitCode.LOCK_FAILED: "passwd -l and usermod -L failed, or the shadow entry does not read back as locked",
}


def explain_lock_exit(code: int) -> str:
    """One sentence about the lock script's exit status."""
    if code in _LOCK_EXPLANATIONS:
        return _LOCK_EXPLANATIONS[code]
    return f"the lock command failed with unexpected exit status {code}; read the console output"


def build_lock_script(user: str, *, nonce: str, uid_var: str | None = None) -> GuestScript:
    """The script that locks `user`'s password (root's shell, or a password-less sudoer's).

    `uid_var` names a variable that holds this shell's uid already (`run_as` sets `mu`), which
    saves an `id -u` process (~60 ms on an emulated guest).

    Raises:
        ValueError: `user` is not a plain login name, `nonce` is malformed, or `uid_var` is not a variable name.
    """
    _check_user(user)
    _check_nonce(nonce)
    if uid_var is not None and not re.fullmatch(r"[a-z_][a-z0-9_]*", uid_var):
        raise ValueError(f"uid_var must be a shell variable name, got {uid_var!r}")
    uid = "$(id -u)" if uid_var is None else f"${uid_var}"
    lines = (
        "{",
        f"a={user}",
        "bang=$(printf '\\041')",
        f"if [ \"{uid}\" = 0 ]; then s=",
        "elif sudo -n true >/dev/null 2>&1; then s='sudo -n'",
        f"else exit {LockExitCode.NOT_PRIVILEGED.value}",
        "fi",
        "$s passwd -l \"$a\" >/dev/null 2>&1 || $s usermod -L \"$a\" >/dev/null 2>&1 || "
        f"exit {LockExitCode.LOCK_FAILED.value}",
        "p=$($s getent shadow \"$a\"); p=${p#*:}; p=${p%%:*}",  # the password field, with no `cut` process
        f"case $p in \"$bang\"*) exit 0 ;; *) exit {LockExitCode.LOCK_FAILED.value} ;; esac",
        "} </dev/null",
    )
    return GuestScript(lines=lines, nonce=nonce)

# ---------------------------------------------------------------------------------------------
# The terse install: one command line, for a VNC console whose screen is read.
#
# On QEMU's VNC server (libvirt, Nova, Proxmox) every typed character costs two to four key events at
# 10 ms each, so the command's length is the install's time. Where the screen is read, the facts come
# back on one line and the script can be short; it keeps every rule of the long one that protects
# the file, with the same exit statuses (`ExitCode`):
#
# - the typed key's sha256, first TERSE_DIGEST hex digits, checked before anything changes (15 if
#   altered; `checksum unavailable` where there is no sha256sum). 32 bits catch any typing fault
#   but one in four billion, and the dialogue has compared the screen with what was typed before
#   the Enter that runs it;
# - HOME reachable (`cd`), else 10; a missing ~/.ssh is created under umask 077 (10 if it cannot be);
# - authorized_keys copied aside once per run (`cp -p`, never over an earlier copy), else 17;
# - a missing final newline added before appending (18 if it cannot be);
# - the key appended only if the exact line is absent (`grep -qxF`), and found there after (18);
# - modes 700/600 (19), and restorecon where SELinux has one.
#
# `echo` is safe for the key (it holds no backslash), and so is grep without `-e` (the key starts
# with its type, never with `-`); `grep -s` is quiet about a file not there yet. It is one line: a
# shell parses a whole line before running any of it, so a damaged line runs nothing, and
# `recovery.channels.dialogue.heredoc_command` types a one-line script without a single quote as
# `sh -c '...'` (no here-document, no delimiter line). The key sits in double quotes inside that
# single-quoted argument, so a key whose comment holds a quote, `$`, a backquote, a backslash or
# `!` gets the long script instead, and so does a key too long for one line (RSA: TERSE_FRAME). The
# one fact line, `RCV-<nonce> facts=DCLA BACKUP` (`_terse_facts`), is printed last: D ssh_dir_created
# (1/0), C checksum (v verified, u unavailable), L newline_added (1/0), A added (1 yes, 0
# already-present), and the backup path or `-`.
# ---------------------------------------------------------------------------------------------

TERSE_DIGEST = 8
TERSE_FRAME = 100  # characters the dialogue's `sh -c` framing adds: the typed line stays under busybox's 1024
_TERSE_KEY = re.compile(r"[A-Za-z0-9+/=@%,.:_ -]+")
_TERSE_FACTS = re.compile(r"([01])([vu])([01])([01]) (.+)")


def _terse_install(public_line: str, nonce: str, run_tag: str | None) -> GuestScript | None:
    """The terse install command (see above) for validated arguments, or None for a key it cannot carry."""
    if not _TERSE_KEY.fullmatch(public_line):
        return None
    digest = hashlib.sha256(f"{public_line}\n".encode()).hexdigest()[:TERSE_DIGEST]
    tag = run_tag or nonce
    steps = (
        f"n={nonce}",
        f'k="{public_line}"',
        f'c=u;h=$(echo "$k"|sha256sum)&&case $h in {digest}*)c=v;;*)exit {ExitCode.TYPED_KEY_ALTERED.value};esac',
        f"cd||exit {ExitCode.NO_SSH_DIR.value}",
        "umask 077",  # what is created is the user's alone
        f"d=0;[ -d .ssh ]||{{ mkdir .ssh||exit {ExitCode.NO_SSH_DIR.value};d=1;}}",
        "a=.ssh/authorized_keys",
        f'b=-;[ -e $a ]&&{{ b=~/$a.recovery-{tag};[ -e "$b" ]||cp -p $a "$b"||exit {ExitCode.BACKUP_FAILED.value};}}',
        f'l=0;[ -s $a ]&&[ -n "$(tail -c1 $a)" ]&&{{ echo>>$a||exit {ExitCode.WRITE_FAILED.value};l=1;}}',
        f'p=0;grep -sqxF "$k" $a||{{ echo "$k">>$a&&grep -qxF "$k" $a||exit {ExitCode.WRITE_FAILED.value};p=1;}}',
        f"chmod 700 .ssh&&chmod 600 $a||exit {ExitCode.CHMOD_FAILED.value}",
        "/sbin/restorecon -R .ssh 2>&-",  # SELinux's labels; no such program without it (stderr closed)
        'echo RCV-$n facts=$d$c$l$p "$b"',  # from n: the echo of the typed line never shows RCV-<nonce>
    )
    line = ";".join(steps)
    if len(line) > MAX_LINE - TERSE_FRAME:  # a long key (RSA): the long script splits it over lines
        return None
    return GuestScript(lines=(line,), nonce=nonce)


def _terse_facts(name: str, value: str) -> list[tuple[str, str]]:
    """The named facts the terse command's one `facts=` line stands for; any other fact as it is."""
    found = _TERSE_FACTS.fullmatch(value) if name == "facts" else None
    if found is None:
        return [(name, value)]
    created, checksum, newline, added, backup = found.groups()
    return [
        ("ssh_dir_created", "yes" if created == "1" else "no"),
        ("checksum", "verified" if checksum == "v" else "unavailable"),
        ("backup", "none" if backup == "-" else backup),
        ("newline_added", "yes" if newline == "1" else "no"),
        ("added", "yes" if added == "1" else "already-present"),
        ("exit", "0"),
    ]


# ---------------------------------------------------------------------------------------------
# Removal: the script that takes keys OUT of authorized_keys (`authorized_keys.remove`, `revoke`).
#
# Same wire rules as the install (POSIX sh, printable ASCII, no `!`, short lines, facts tagged
# with the nonce from a variable), and the same promise never to lose data, kept differently:
# the file is rewritten, not appended to, so the kept lines go to a temporary file in the same
# directory, which takes the original's owner, mode and SELinux context before an atomic `mv`
# over it (rename(2): sshd sees the old file or the new one, never half of one). A backup is made
# first (`cp -p`), and the new file is read back: a line still matching is a failure.
#
# How keys are matched, and why the controller sends key blobs: a fingerprint cannot be turned
# back into a key, and only `ssh-keygen` computes one on the guest (busybox VMs have none). So
# when the controller has the public key (a key line, a `.pub` file, or the line it read from the
# VM over SSH), it sends the key's base64 blob, which the script compares as text on any guest.
# A SHA256/MD5 fingerprint is sent as such only when the controller has nothing better; the
# script then needs ssh-keygen and refuses (`no-fingerprint-tool`, nothing changed) without it.
# Lines that hold no key (comments, a commented-out key included: sshd ignores it, blank lines,
# garbage) are always kept, byte for byte, as
# are kept key lines (options, comments and CR line ends included); a last line without a final
# newline gains one.
#
# Facts: ``file``, one ``removed_key`` and ``kept_key`` per key line (``<line> <type> <blob>
# [comment]``: the controller computes fingerprints from the blob, so the report lists them on
# guests without ssh-keygen too), ``removed`` and ``kept`` counts, ``backup``, ``selinux``,
# ``status`` (absent|nothing-to-remove|would-remove|removed) and ``exit``; a failure prints ``error=`` and
# ``exit=``. Run as root with `user` set, it reads the home from the passwd database and gives
# the new file the old one's owner (``chown --reference``, else ``stat``'s uid:gid, else the
# passwd uid:gid: a root-owned file stays root's on busybox too); run as the
# user it never chowns.
#
# The file is ``~/.ssh/authorized_keys`` unless the spec names another (`RemoveSpec.file`): sshd may
# read several (AuthorizedKeysFile, `build_key_files_script`), each removed from the same way. Run
# as a user, the script refuses (``needs-root``, nothing changed) to rewrite a file that is not
# that user's or whose directory it cannot write (``/etc/ssh/authorized_keys/%u``, root's): the
# caller goes through ``sudo -n`` or reports the file as still holding the key. A dry run creates
# nothing, so it reads such a file as any user who may read it.
# ---------------------------------------------------------------------------------------------

_FINGERPRINT_SHA256 = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
_FINGERPRINT_MD5 = re.compile(r"(?:MD5:)?((?:[0-9a-f]{2}:){15}[0-9a-f]{2})")
_BLOB = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
# Key types a line may carry, old and certificate ones included: a stolen DSA key or certificate
# still has to be found to be removed.
_LINE_KEY_TYPES = (
    *sorted(KEY_TYPES),
    "ssh-dss",
    "ssh-ed25519-cert-v01@openssh.com",
    "ssh-rsa-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "sk-ssh-ed25519-cert-v01@openssh.com",
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
)


class RemoveExitCode(ScriptStatus):
    """Exit status of the removal script; 30 and up, clear of the install's and the shell's."""

    OK = 0
    NO_HOME = 30
    NO_TEMP_FILE = 31
    NO_FINGERPRINT_TOOL = 32
    LAST_PROVEN_KEY = 33
    BACKUP_FAILED = 34
    WRITE_FAILED = 35
    STILL_PRESENT = 36
    NO_SUCH_USER = 37
    NOT_THAT_USER = 38
    UNREADABLE = 39
    NEEDS_ROOT = 40


_REMOVE_UNCHANGED = "authorized_keys was not changed"
_REMOVE_EXPLANATIONS: dict[int, str] = {
    RemoveExitCode.OK: "the matching keys are gone from authorized_keys (or none was there)",
    RemoveExitCode.NO_HOME: f"the user's home directory is unknown or missing; {_REMOVE_UNCHANGED}",
    RemoveExitCode.NO_TEMP_FILE: (
        f"mktemp could not create a temporary file in ~/.ssh (disk full or read-only?); {_REMOVE_UNCHANGED}"
    ),
    RemoveExitCode.NO_FINGERPRINT_TOOL: (
        "a fingerprint was asked for but the VM has no ssh-keygen to compute one: give the public key "
        f"(its blob is matched as text on any VM); {_REMOVE_UNCHANGED}"
    ),
    RemoveExitCode.LAST_PROVEN_KEY: (
        "the change would remove every key this run has proven to log in, locking the way back in out; "
        f"add another working key first, or say force: true; {_REMOVE_UNCHANGED}"
    ),
    RemoveExitCode.BACKUP_FAILED: f"authorized_keys could not be copied to a backup (disk full?); {_REMOVE_UNCHANGED}",
    RemoveExitCode.WRITE_FAILED: (
        "writing the new authorized_keys or renaming it into place failed (disk full, read-only, owner "
        "or mode not settable); the backup printed as backup= holds the previous content"
    ),
    RemoveExitCode.STILL_PRESENT: (
        "authorized_keys was rewritten but a matching key is still in it when read back (did something "
        "else write to it at the same time?); the backup printed as backup= holds the previous content"
    ),
    RemoveExitCode.NO_SUCH_USER: f"the user is not in the passwd database; {_REMOVE_UNCHANGED}",
    RemoveExitCode.NOT_THAT_USER: (
        f"the script runs as another user, and not as root, so it cannot change this user's keys; {_REMOVE_UNCHANGED}"
    ),
    RemoveExitCode.UNREADABLE: (
        f"authorized_keys exists but cannot be read, or its directory cannot be searched; {_REMOVE_UNCHANGED}"
    ),
    RemoveExitCode.NEEDS_ROOT: (
        "the file is not the running user's, or its directory is not writable by that user (a root-owned "
        f"file such as /etc/ssh/authorized_keys/USER): only root can rewrite it; {_REMOVE_UNCHANGED}"
    ),
    2: "sh reported a syntax error: the script probably arrived damaged through the console",
    127: "a command the script needs was not found in the VM",
}


def explain_remove_exit(code: int) -> str:
    """One sentence about what the removal script's exit status means."""
    return _explained(_REMOVE_EXPLANATIONS, code, "read its output")


@dataclass(frozen=True)
class RemoveSpec:
    """Which keys to take out (or, `exclusive`, to keep), and the guards around it.

    `blobs` are base64 key blobs (the second field of a key line: `key_blob`); `fingerprints`
    are ``SHA256:...`` or ``MD5:aa:bb:...`` (need ssh-keygen on the guest); `lines` match a whole
    line exactly (a CR line end ignored); `comments` match a key's comment exactly. `protect`
    holds the blobs of keys the run has proven to log in: the script refuses to remove the last
    of them unless `force`. `user`: whose file, when run as root; None means the running user.
    `file`: an absolute path to change instead of the user's ``~/.ssh/authorized_keys`` (another
    file sshd reads for that user, `build_key_files_script`).
    `dry_run` reads and reports (status ``would-remove``) and changes nothing; a fingerprint then
    matches only where ssh-keygen exists, but every key line is listed with its blob, for the
    controller to match.
    """

    blobs: tuple[str, ...] = ()
    fingerprints: tuple[str, ...] = ()
    lines: tuple[str, ...] = ()
    comments: tuple[str, ...] = ()
    exclusive: bool = False
    protect: tuple[str, ...] = ()
    force: bool = False
    user: str | None = None
    dry_run: bool = False
    file: str | None = None

    def __post_init__(self) -> None:
        if not (self.blobs or self.fingerprints or self.lines or self.comments):
            raise ValueError("nothing to match: give at least one key, fingerprint, line or comment")
        for blob in (*self.blobs, *self.protect):
            if not _BLOB.fullmatch(blob):
                raise ValueError(f"not a base64 key blob: {blob[:60]!r}")
        for value in self.fingerprints:
            normalize_fingerprint(value)
        for text in (*self.lines, *self.comments):
            if not text or not _printable(text):
                raise ValueError(f"a line or comment to match must be non-empty printable ASCII: {text[:60]!r}")
        if self.user is not None and not _USER.fullmatch(self.user):
            raise ValueError(f"not a user name: {self.user!r}")
        if self.file is not None and not (_printable(self.file) and self.file.startswith("/")
                                          and len(self.file) <= 400):
            raise ValueError(f"not an absolute path of printable ASCII: {self.file[:60]!r}")


def normalize_fingerprint(value: str) -> str:
    """``SHA256:...`` as is, MD5 as ``MD5:aa:bb:...`` (how ``ssh-keygen -E md5 -l`` prints it).

    Raises:
        ValueError: neither form.
    """
    text = value.strip()
    if _FINGERPRINT_SHA256.fullmatch(text):
        return text
    md5 = _FINGERPRINT_MD5.fullmatch(text.lower() if not text.startswith("MD5:") else "MD5:" + text[4:].lower())
    if md5:
        return f"MD5:{md5.group(1)}"
    raise ValueError(f"not a SHA256:... or MD5 aa:bb:... fingerprint: {value[:70]!r}")


def key_blob(public_line: str) -> str:
    """The base64 blob of a public key line (options before the key type allowed)."""
    fields = public_line.split()
    for index, word in enumerate(fields[:-1]):
        if word in _LINE_KEY_TYPES and _BLOB.fullmatch(fields[index + 1]):
            return fields[index + 1]
    raise KeyGenerationError(f"no public key found in {public_line[:60]!r}")


def blob_fingerprints(blob: str) -> tuple[str, str]:
    """(``SHA256:...``, ``MD5:aa:...``) of a base64 key blob, as ssh-keygen prints them."""
    raw = base64.b64decode(blob)
    sha = "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")
    md5 = hashlib.md5(raw, usedforsecurity=False).hexdigest()
    return sha, "MD5:" + ":".join(md5[i : i + 2] for i in range(0, 32, 2))


@dataclass(frozen=True)
class KeyLine:
    """One key line the removal script saw: where, which key, and its comment."""

    line: int
    key_type: str
    blob: str
    comment: str

    @property
    def sha256(self) -> str:
        return blob_fingerprints(self.blob)[0]


@dataclass(frozen=True)
class RemoveReport:
    """What the removal script reported; a field is None where it did not get that far."""

    exit_code: int | None
    error: str | None
    status: str | None
    file: str | None
    removed: tuple[KeyLine, ...]
    kept: tuple[KeyLine, ...]
    backup: str | None
    selinux: str | None
    facts: tuple[tuple[str, str], ...] = field(repr=False)

    @property
    def ok(self) -> bool:
        return self.exit_code == RemoveExitCode.OK

    @property
    def explanation(self) -> str:
        if self.exit_code is None:
            return "the script stopped without reporting an exit status; read its output"
        return explain_remove_exit(self.exit_code)

    def summary(self) -> dict[str, object]:
        """For the run report: fingerprints only, never whole key lines."""
        return {
            "file": self.file,
            "status": self.status,
            "backup": self.backup,
            "removed": [f"{key.sha256} {key.comment}".rstrip() for key in self.removed],
            "kept": [f"{key.sha256} {key.comment}".rstrip() for key in self.kept],
        }


def build_remove_script(spec: RemoveSpec, *, nonce: str, facts: bool = True) -> GuestScript:
    """Build the script that removes the keys `spec` matches from authorized_keys.

    Args:
        spec: what to match and the guards; see `RemoveSpec`.
        nonce: as for `build_install_script`: tags facts, names the backup.
        facts: False for a console that shows no text: the facts become no-ops.
    Returns:
        the script; facts come back through `parse_remove_report`.
    """
    _check_nonce(nonce)
    fingerprints = [normalize_fingerprint(value) for value in spec.fingerprints]
    sha = [value for value in fingerprints if value.startswith("SHA256:")]
    md5 = [value for value in fingerprints if value.startswith("MD5:")]
    texts = (*spec.lines, *spec.comments)
    lines: list[str | Secret] = [
        "{",
        f"n={nonce}",
        *(["bang=$(printf '\\041')"] if any("!" in text for text in texts) else []),
        "set -f",
        "cr=$(printf '\\r'); tab=$(printf '\\t')",
        "fact() { printf 'RCV-%s %s=%s\\n' \"$n\" \"$1\" \"$2\"; }" if facts else "fact() { :; }",
        "fail() { fact error \"$2\"; fact exit \"$1\"; exit \"$1\"; }",
    ]
    lines += _assign("ty", " " + " ".join(_LINE_KEY_TYPES) + " ", secret=False)
    lines += _assign("mb", " " + " ".join(spec.blobs) + " ", secret=False)
    lines += _assign("m2", f" {' '.join(sha)} ", secret=False) if sha else ["m2="]
    lines += _assign("m5", f" {' '.join(md5)} ", secret=False) if md5 else ["m5="]
    lines += _assign("mp", " " + " ".join(spec.protect) + " ", secret=False)
    lines.append(f"nx={len(spec.lines)}")
    for index, text in enumerate(spec.lines, 1):
        lines += _assign(f"x{index}", text, secret=False)
    lines.append(f"ny={len(spec.comments)}")
    for index, text in enumerate(spec.comments, 1):
        lines += _assign(f"y{index}", text, secret=False)
    lines += [
        f"ex={int(spec.exclusive)}",
        f"fo={int(spec.force)}",
        f"dr={int(spec.dry_run)}",
        f"uu={spec.user or ''}",
        *(_assign("af", spec.file, secret=False) if spec.file else ["af="]),
        *_REMOVE,
    ]
    return GuestScript(lines=tuple(lines), nonce=nonce)


def parse_remove_report(output: str, nonce: str) -> RemoveReport:
    """Collect the removal script's facts from its output (console or SSH), noise ignored.

    Raises:
        GuestCommandError: no fact line carries this nonce: the script did not run.
    """
    marker = re.compile(rf"RCV-{re.escape(_check_nonce(nonce))} ([a-z0-9_]+)=(.*)")
    facts: list[tuple[str, str]] = []
    for line in re.split(r"\r\n|\r|\n", _ANSI.sub("", output)):
        found = marker.search(line)
        if found:
            facts.append((found.group(1), found.group(2).rstrip()))
    if not facts:
        raise GuestCommandError(
            f"the key removal script printed no report line (RCV-{nonce}): it did not run, or its output was lost",
            transcript_tail=scrub_all(output.splitlines()),
        )
    last = dict(facts)

    def keys(name: str) -> tuple[KeyLine, ...]:
        found: list[KeyLine] = []
        for key, value in facts:
            parts = value.split(" ", 3)
            if key == name and len(parts) >= 3 and parts[0].isdigit() and _BLOB.fullmatch(parts[2]):
                found.append(KeyLine(int(parts[0]), parts[1], parts[2], parts[3] if len(parts) > 3 else ""))
        return tuple(found)

    code = last.get("exit", "")
    return RemoveReport(
        exit_code=int(code) if code.isascii() and code.isdigit() else None,
        error=last.get("error"),
        status=last.get("status"),
        file=last.get("file"),
        removed=keys("removed_key"),
        kept=keys("kept_key"),
        backup=last.get("backup"),
        selinux=last.get("selinux"),
        facts=tuple(facts),
    )


# parse LINE: kt/kb are the key type and blob (empty: no key on the line). hit: does the key in
# kt/kb/c/cm match a matcher. judge LINE: h=0 remove, 1 keep, 2 not a key line.
_REMOVE: tuple[str, ...] = (
    "kg=; command -v ssh-keygen >/dev/null 2>&1 && kg=ssh-keygen",
    "parse() {",
    "kt=; kb=",
    "set -- $1",
    "case \"$1\" in \"#\"*) return 0;; esac",
    "while [ $# -gt 1 ]; do",
    "case \"$ty\" in *\" $1 \"*) kt=$1; kb=$2; return 0;; esac",
    "shift",
    "done",
    "}",
    "fp() {",
    "p=$(printf '%s %s\\n' \"$kt\" \"$kb\" | $kg -E \"$1\" -lf - 2>/dev/null) || return 1",
    "set -- $p; [ -n \"$2\" ] && printf '%s' \"$2\"",
    "}",
    "hit() {",
    "case \"$mb\" in *\" $kb \"*) return 0;; esac",
    "if [ -n \"$m2\" ]; then case \"$m2\" in *\" $(fp sha256) \"*) return 0;; esac; fi",
    "if [ -n \"$m5\" ]; then case \"$m5\" in *\" $(fp md5) \"*) return 0;; esac; fi",
    "i=1; while [ $i -le $nx ]; do eval \"v=\\$x$i\"; [ \"$c\" = \"$v\" ] && return 0; i=$((i+1)); done",
    "i=1; while [ $i -le $ny ]; do eval \"v=\\$y$i\"; [ \"$cm\" = \"$v\" ] && return 0; i=$((i+1)); done",
    "return 1",
    "}",
    "judge() {",
    "c=${1%\"$cr\"}",
    "parse \"$c\"",
    "if [ -z \"$kb\" ]; then h=2; return 0; fi",
    "cm=${c#*\"$kb\"}",
    "while :; do case \"$cm\" in \" \"*|\"$tab\"*) cm=${cm#?};; *) break;; esac; done",
    "if hit; then h=0; else h=1; fi",
    "if [ \"$ex\" = 1 ]; then h=$((1-h)); fi",
    "}",
    "umask 077",
    "trap 'exit 130' HUP INT TERM",
    "own=; hd=",
    "if [ -n \"$uu\" ] && [ \"$(id -u)\" = 0 ]; then",
    "pw=$( { getent passwd \"$uu\" || awk -F: -v u=\"$uu\" '$1==u' /etc/passwd; } 2>/dev/null | head -n 1)",
    f"[ -n \"$pw\" ] || {_fail(RemoveExitCode.NO_SUCH_USER)}",
    "IFS=:; set -- $pw; unset IFS",
    "own=$3:$4; hd=$6",
    "elif [ -z \"$uu\" ] || [ \"$(id -un)\" = \"$uu\" ]; then hd=$HOME",
    f"else {_fail(RemoveExitCode.NOT_THAT_USER)}",
    "fi",
    "if [ -n \"$af\" ]; then f=$af; d=${af%/*}; d=${d:-/}",
    f"else [ -n \"$hd\" ] && [ -d \"$hd\" ] || {_fail(RemoveExitCode.NO_HOME)}",
    "d=$hd/.ssh; f=$d/authorized_keys; fi",
    "fact file \"$f\"",
    "if [ -e \"$f\" ]; then :; elif [ -e \"$d\" ] && [ -x \"$d\" ]; then fact status absent; fact exit 0; exit 0",
    f"elif [ -e \"$d\" ]; then {_fail(RemoveExitCode.UNREADABLE)}; else fact status absent; fact exit 0; exit 0; fi",
    f"[ -r \"$f\" ] || {_fail(RemoveExitCode.UNREADABLE)}",
    f"[ -z \"$m2$m5\" ] || [ -n \"$kg\" ] || [ \"$dr\" = 1 ] || {_fail(RemoveExitCode.NO_FINGERPRINT_TOOL)}",
    "t=; w=/dev/null",
    "trap 'rm -f \"$t\"' EXIT",
    "if [ \"$dr\" = 0 ]; then",
    "if [ \"$(id -u)\" = 0 ]; then :; elif [ -O \"$f\" ] && [ -w \"$d\" ]; then :; else "
    + _fail(RemoveExitCode.NEEDS_ROOT) + "; fi",
    f"t=$(mktemp \"$d/.recovery-XXXXXX\") || {_fail(RemoveExitCode.NO_TEMP_FILE)}",
    "w=$t; fi",
    "r=0; k=0; pb=0; pa=0; ln=0",
    "while IFS= read -r l || [ -n \"$l\" ]; do",
    "ln=$((ln+1)); judge \"$l\"",
    "if [ $h = 2 ]; then printf '%s\\n' \"$l\" >>\"$w\" || "
    + _fail(RemoveExitCode.WRITE_FAILED) + "; continue; fi",
    "case \"$mp\" in *\" $kb \"*) pb=$((pb+1)); [ $h = 0 ] || pa=$((pa+1));; esac",
    "if [ $h = 0 ]; then r=$((r+1)); fact removed_key \"$ln $kt $kb $cm\"",
    "else k=$((k+1)); fact kept_key \"$ln $kt $kb $cm\"",
    f"printf '%s\\n' \"$l\" >>\"$w\" || {_fail(RemoveExitCode.WRITE_FAILED)}",
    "fi",
    "l=",
    "done <\"$f\"",
    "fact removed \"$r\"; fact kept \"$k\"",
    "if [ $r = 0 ]; then fact status nothing-to-remove; fact exit 0; exit 0; fi",
    "if [ \"$dr\" = 1 ]; then fact status would-remove; fact exit 0; exit 0; fi",
    "if [ $pb -gt 0 ] && [ $pa = 0 ] && [ \"$fo\" = 0 ]; then "
    + _fail(RemoveExitCode.LAST_PROVEN_KEY) + "; fi",
    "b=$f.recovery-$(date -u +%Y%m%dT%H%M%SZ)-$n",
    "while [ -e \"$b\" ]; do b=$b-1; done",
    f"cp -p \"$f\" \"$b\" || {_fail(RemoveExitCode.BACKUP_FAILED)}",
    "fact backup \"$b\"",
    "if [ -n \"$own\" ]; then chown --reference=\"$f\" \"$t\" 2>/dev/null || "
    "{ o=$(stat -c %u:%g \"$f\" 2>/dev/null) && chown \"$o\" \"$t\"; } || chown \"$own\" \"$t\" || "
    + _fail(RemoveExitCode.WRITE_FAILED) + "; fi",
    "chmod --reference=\"$f\" \"$t\" 2>/dev/null || { m=$(stat -c %a \"$f\" 2>/dev/null) && chmod \"$m\" \"$t\"; } || "
    + "chmod 600 \"$t\" || " + _fail(RemoveExitCode.WRITE_FAILED),
    "command -v chcon >/dev/null 2>&1 && chcon --reference=\"$f\" \"$t\" 2>/dev/null",
    f"mv -f \"$t\" \"$f\" || {_fail(RemoveExitCode.WRITE_FAILED)}",
    "t=; q=0",
    "while IFS= read -r l || [ -n \"$l\" ]; do judge \"$l\"; [ $h = 0 ] && q=$((q+1)); l=; done <\"$f\"",
    f"[ $q = 0 ] || {_fail(RemoveExitCode.STILL_PRESENT)}",
    "e=no-restorecon",
    "for z in restorecon /usr/sbin/restorecon /sbin/restorecon; do",
    "command -v \"$z\" >/dev/null 2>&1 || continue",
    "if \"$z\" \"$f\" 2>/dev/null; then e=restored; else e=restorecon-failed; fi; break",
    "done",
    "fact selinux \"$e\"",
    "fact status removed",
    "fact exit 0",
    "} </dev/null",
)


# --- which files sshd reads keys from (for the removal) ------------------------------------------
# sshd may read keys from several files (AuthorizedKeysFile: Debian's and Ubuntu's default is
# `.ssh/authorized_keys .ssh/authorized_keys2`; an absolute `/etc/ssh/authorized_keys/%u`), and ask
# an AuthorizedKeysCommand. This script only reads and reports; the controller expands the tokens
# (`recovery.ssh.key_files`) and runs the removal script once per file. Where `sshd -T` runs (as
# root, or through `sudo -n`: it needs the host keys, which no user may read), it answers for each
# user with Match blocks and Includes applied, asked as the connection the script runs in
# ($SSH_CLIENT). Otherwise the configuration files are reported in the order sshd reads them: each
# readable file's Include, AuthorizedKeysFile, AuthorizedKeysCommand and Match lines, and what each
# Include pattern matched (sorted, as sshd's glob), for the controller to follow (Match blocks
# cannot be applied there).
#
# Facts: ``uid`` (the script's own: 0 is root), one ``pw`` per user found (``name:uid:home``),
# ``sshd_config`` (sshd-T|files), ``sshd_as`` (plain|sudo), per user ``akf`` and ``akc``
# (``<user> <value>``, from sshd -T), or per file read ``conf`` then its ``cl`` lines and ``inc``
# (``<word><TAB><path>``), and ``conf_unreadable`` for a file that exists but cannot be read.

_CONFIG_WORDS = "include|authorizedkeysfile|authorizedkeyscommand|match"
_INCLUDES_AWK = (
    "{l=$0; sub(/^[ \\t]+/,\"\",l); w=tolower(l); sub(/[ \\t=].*/,\"\",w); "
    "if (w==\"include\") {sub(/^[^ \\t=]+[ \\t]*=?[ \\t]*/,\"\",l); print l}}"
)
_SSHD_T_AWK = (
    "$1==\"authorizedkeysfile\"||$1==\"authorizedkeyscommand\" {v=$0; sub(/^[^ ]+ /,\"\",v); "
    "k=($1==\"authorizedkeysfile\")?\"akf\":\"akc\"; print \"RCV-\" n \" \" k \"=\" u \" \" v}"
)
_KEY_FILES: tuple[str, ...] = (
    "me=$(id -u); fact uid \"$me\"",
    "if [ \"$al\" = 1 ]; then",
    "ul=$(awk -F: 'length($6) {print $1}' /etc/passwd)",
    "awk -F: -v n=\"$n\" 'length($6) {print \"RCV-\" n \" pw=\" $1 \":\" $3 \":\" $6}' /etc/passwd",
    "else for u in $ul; do",
    "p=$( { getent passwd \"$u\" || awk -F: -v u=\"$u\" '$1==u' /etc/passwd; } 2>/dev/null | head -n 1)",
    "[ -n \"$p\" ] || continue",
    "IFS=:; set -- $p; unset IFS",
    "fact pw \"$1:$3:$6\"",
    "done; fi",
    "a=${SSH_CLIENT%% *}; a=${a:-127.0.0.1}",
    "sd=; for s in $(command -v sshd 2>/dev/null) /usr/sbin/sshd /usr/local/sbin/sshd; do",
    "[ -x \"$s\" ] && { sd=$s; break; }; done",
    "st() {",
    "if [ \"$sx\" = sudo ]; then sudo -n \"$sd\" -T -f \"$cf\" -C \"user=$1,host=$a,addr=$a\" 2>/dev/null",
    "else \"$sd\" -T -f \"$cf\" -C \"user=$1,host=$a,addr=$a\" 2>/dev/null; fi",
    "}",
    "sx=; set -- $ul",
    "if [ -n \"$sd\" ] && [ -n \"$1\" ]; then",
    "if [ \"$me\" = 0 ]; then sx=plain; elif command -v sudo >/dev/null 2>&1; then sx=sudo; fi",
    "[ -z \"$sx\" ] || st \"$1\" >/dev/null || sx=",
    "fi",
    "if [ -n \"$sx\" ]; then",
    "fact sshd_config sshd-T; fact sshd_as \"$sx\"",
    f"for u in $ul; do st \"$u\" | awk -v n=\"$n\" -v u=\"$u\" '{_SSHD_T_AWK}'; done",
    "else",
    "fact sshd_config files",
    "q=$cf; seen=$tab",
    "while [ -n \"$q\" ]; do",
    "c=${q%%\"$tab\"*}; q=${q#\"$c\"}; q=${q#\"$tab\"}",
    "case \"$seen\" in *\"$tab$c$tab\"*) continue;; esac",
    "seen=$seen$c$tab",
    "[ -e \"$c\" ] || continue",
    "if [ -r \"$c\" ]; then :; else fact conf_unreadable \"$c\"; continue; fi",
    "fact conf \"$c\"",
    f"grep -iE '^[[:space:]]*({_CONFIG_WORDS})([[:space:]=]|$)' \"$c\" | while IFS= read -r l; do fact cl \"$l\"; done",
    f"for p in $(awk '{_INCLUDES_AWK}' \"$c\"); do",
    "g=$p; case \"$g\" in /*) ;; *) g=${cf%/*}/$g;; esac",
    "set +f; for i in $g; do [ -e \"$i\" ] && { fact inc \"$p$tab$i\"; q=${q:+$q$tab}$i; }; done; set -f",
    "done",
    "done",
    "fi",
    "fact exit 0",
    "} </dev/null",
)


@dataclass(frozen=True)
class KeyFilesReport:
    """What `build_key_files_script` reported: users, and sshd's answer or its configuration's lines.

    `sshd_t` maps a user to (AuthorizedKeysFile, AuthorizedKeysCommand) as ``sshd -T`` printed
    them; `config` lists each configuration file read, in the order read, with its relevant
    lines; `includes` maps (file, Include word) to the paths it matched.
    """

    read_from: str | None  # sshd-T, files
    uid: str | None  # the script's own uid
    users: dict[str, tuple[str, str]]  # name -> (uid, home)
    sshd_t: dict[str, tuple[str, str]]
    config: tuple[tuple[str, tuple[str, ...]], ...]
    includes: dict[tuple[str, str], tuple[str, ...]]
    unreadable: tuple[str, ...]
    main: str
    through_sudo: bool = False


def build_key_files_script(
    users: Iterable[str] | None, *, nonce: str, config: str = "/etc/ssh/sshd_config"
) -> GuestScript:
    """Build the script that reports where sshd reads each user's keys (see above).

    Args:
        users: whose files; None for every user in /etc/passwd with a home.
        nonce: tags the facts (`parse_key_files_report`).
        config: sshd's main configuration file; relative Includes are taken from its directory.
    """
    _check_nonce(nonce)
    names = list(users) if users is not None else []
    for name in names:
        if not _USER.fullmatch(name):
            raise ValueError(f"not a user name: {name!r}")
    if not (_printable(config) and config.startswith("/")):
        raise ValueError(f"not an absolute path: {config!r}")
    lines: list[str | Secret] = [
        "{",
        f"n={nonce}",
        "set -f",
        "tab=$(printf '\\t')",
        "fact() { printf 'RCV-%s %s=%s\\n' \"$n\" \"$1\" \"$2\"; }",
        *_assign("cf", config, secret=False),
        f"al={int(users is None)}",
        f"ul='{' '.join(names)}'",
        *_KEY_FILES,
    ]
    return GuestScript(lines=tuple(lines), nonce=nonce)


def parse_key_files_report(output: str, nonce: str, *, config: str = "/etc/ssh/sshd_config") -> KeyFilesReport:
    """Collect `build_key_files_script`'s facts.

    Raises:
        GuestCommandError: no fact line carries this nonce, or no ``exit``: the script did not finish.
    """
    marker = re.compile(rf"RCV-{re.escape(_check_nonce(nonce))} ([a-z_]+)=(.*)")
    users: dict[str, tuple[str, str]] = {}
    sshd_t: dict[str, list[str]] = {}
    config_lines: list[tuple[str, list[str]]] = []
    includes: dict[tuple[str, str], list[str]] = {}
    unreadable: list[str] = []
    facts: dict[str, str] = {}
    for line in re.split(r"\r\n|\r|\n", _ANSI.sub("", output)):
        found = marker.search(line)
        if not found:
            continue
        name, value = found.group(1), found.group(2).rstrip("\r")
        facts[name] = value
        if name == "pw" and value.count(":") >= 2:
            user, uid, home = value.split(":", 2)
            users[user] = (uid, home)
        elif name in ("akf", "akc") and " " in value:
            user, setting = value.split(" ", 1)
            sshd_t.setdefault(user, ["", ""])[name == "akc"] = setting.strip()
        elif name == "conf":
            config_lines.append((value, []))
        elif name == "cl" and config_lines:
            config_lines[-1][1].append(value)
        elif name == "inc" and config_lines and "\t" in value:
            word, path = value.split("\t", 1)
            includes.setdefault((config_lines[-1][0], word), []).append(path)
        elif name == "conf_unreadable":
            unreadable.append(value)
    if facts.get("exit") != "0":
        raise GuestCommandError(
            f"the script asking where sshd reads keys did not finish (no RCV-{nonce} exit=0 line)",
            transcript_tail=scrub_all(output.splitlines()),
        )
    return KeyFilesReport(
        read_from=facts.get("sshd_config"),
        uid=facts.get("uid"),
        users=users,
        sshd_t={user: (pair[0], pair[1]) for user, pair in sshd_t.items()},
        config=tuple((path, tuple(lines)) for path, lines in config_lines),
        includes={key: tuple(paths) for key, paths in includes.items()},
        unreadable=tuple(unreadable),
        main=config,
        through_sudo=facts.get("sshd_as") == "sudo",
    )

# --- install into a mounted root (the rescue route) ----------------------------------------------
# The rescue system's root shell installs into the server's own root disk, mounted at a prefix:
# no user to switch to, so the owner comes from the MOUNTED disk's /etc/passwd (never the rescue
# system's: the same name may have another uid there), and every path is the prefix plus the
# server's path. A symlink on the way (/home -> /var/home, a ~/.ssh link) would resolve inside
# the rescue system, so it is refused, not followed. The backup, final newline, append-if-absent
# and modes are `_APPEND`'s, as on a running VM; SELinux is relabelled at the server's next boot
# (`.autorelabel`): restorecon here would use the rescue system's policy.


class MountedExitCode(ScriptStatus):
    """Exit statuses of the mounted-root install beyond `ExitCode` (which it also uses)."""

    NO_SUCH_DEVICE = 40
    RESCUE_ROOT = 41
    ALREADY_MOUNTED = 42
    MOUNT_FAILED = 43
    NOT_A_ROOT = 44
    NO_SUCH_USER = 45
    NO_HOME = 46
    SYMLINK = 47


_MOUNTED_NOTHING = "nothing was mounted or changed"
_MOUNTED_EXPLANATIONS: dict[int, str] = {
    MountedExitCode.NO_SUCH_DEVICE: f"the device is not a block device on the rescue system; {_MOUNTED_NOTHING}",
    MountedExitCode.RESCUE_ROOT: (
        f"the device is the rescue system's own root, not the server's disk; {_MOUNTED_NOTHING}"
    ),
    MountedExitCode.ALREADY_MOUNTED: (
        "the device is already mounted on the rescue system (by it, or by someone on its console); "
        + _MOUNTED_NOTHING
    ),
    MountedExitCode.MOUNT_FAILED: (
        "mount failed (an unknown or damaged file system: fsck it from the rescue console first); "
        + _MOUNTED_NOTHING
    ),
    MountedExitCode.NOT_A_ROOT: (
        "the device has no etc/passwd: it is not a root file system (a data or /boot volume?); name "
        "the root with root_device; it was unmounted, nothing changed"
    ),
    MountedExitCode.NO_SUCH_USER: (
        "the user is not in the server's /etc/passwd (on the mounted disk); it was unmounted, nothing changed"
    ),
    MountedExitCode.NO_HOME: (
        "the user's home directory (from the server's /etc/passwd) is missing on the disk or not absolute; "
        "it was unmounted, nothing changed"
    ),
    MountedExitCode.SYMLINK: (
        "a symbolic link is on the way to authorized_keys (the home, ~/.ssh or the file): from a rescue "
        "system it would point into the rescue system, so it is not followed; it was unmounted, nothing changed"
    ),
}


def explain_mounted_exit(code: int) -> str:
    """One sentence about the mounted-root install's exit status (its own codes, then `explain_exit`'s)."""
    return _MOUNTED_EXPLANATIONS.get(code) or explain_exit(code)


_PLAIN_PATH = re.compile(r"/[A-Za-z0-9._+:/-]{1,200}")
_USER_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}\$?")


def build_mounted_install_script(
    public_line: str, *, sha256: str, nonce: str, device: str, user: str, run_tag: str | None = None,
    mount_base: str = "/mnt",
) -> GuestScript:
    """The script that mounts `device` and installs `public_line` for `user` into the root found there.

    Run as root on a rescue system's console. It refuses `device` when it is the rescue system's
    own root (same device number as ``/``) or already mounted; mounts it at
    ``<mount_base>/recovery-<nonce>``; takes uid, gid and home from the mounted ``etc/passwd``; creates
    ``~/.ssh`` owned by that uid/gid, appends the key as `build_install_script` does (backup, final
    newline, only if absent, 0700/0600), gives a file it created that owner, schedules a relabel
    where SELinux is on, and on any exit (a failure, a signal) syncs and unmounts. Facts:
    ``mounted``, ``uid``, ``gid``, ``home``, ``ssh_dir_created``, the ``before_*``/``after_*``
    snapshots, ``backup``, ``newline_added``, ``added``, ``owner_set``, ``selinux``
    (relabel-scheduled|off), ``unmounted`` (yes|no), ``exit``.

    Raises:
        KeyGenerationError: `public_line` is not one OpenSSH public key line.
        ValueError: `device`, `user`, `nonce`, `sha256` or `run_tag` is malformed, or `sha256`
            is not the key's digest.
    """
    _check_public_line(public_line)
    _check_nonce(nonce)
    if not _PLAIN_PATH.fullmatch(device) or ".." in device:
        raise ValueError(f"device must be an absolute path of plain characters (/dev/vdb1), got {device!r}")
    if not _USER_NAME.fullmatch(user):
        raise ValueError(f"not a user name: {user!r}")
    if not _PLAIN_PATH.fullmatch(mount_base) or ".." in mount_base:
        raise ValueError(f"mount_base must be an absolute path of plain characters, got {mount_base!r}")
    if run_tag is not None and not _RUN_TAG.fullmatch(run_tag):
        raise ValueError(f"run_tag must be 1-64 characters of [A-Za-z0-9_.-], got {run_tag!r}")
    digest = sha256.lower()
    with_newline = hashlib.sha256(f"{public_line}\n".encode()).hexdigest()
    if digest not in (with_newline, hashlib.sha256(public_line.encode()).hexdigest()):
        raise ValueError("sha256 is not the digest of public_line (with or without a final newline)")
    key_format = "%s\\n" if digest == with_newline else "%s"
    lines: list[str | Secret | _Fact] = [
        "{",
        f"n={nonce}",
        f"w={digest}",
        f"r={run_tag or nonce}",
        *_HELPERS,
        *map(_Fact, _SNAPSHOT),
        "umask 077",
        "set -f",
        "p=; t=",
        "trap 'exit 130' HUP INT TERM",
        "trap 'rm -f \"$t\"; cd /; [ -z \"$p\" ] || { sync; if umount \"$p\"; then rmdir \"$p\"; "
        "fact unmounted yes; else fact unmounted no; fi; }' EXIT",
        *_assign("dv", device, secret=False),
        *_assign("uu", user, secret=False),
        f"mp={mount_base}/recovery-$n",
        f"[ -b \"$dv\" ] || {_fail(MountedExitCode.NO_SUCH_DEVICE)}",
        "rs=$(stat -c %d /); mj=$(stat -L -c %t \"$dv\"); mn=$(stat -L -c %T \"$dv\")",
        "if [ $(( (rs >> 8) & 4095 )) = $((0x$mj)) ] && [ $(( (rs & 255) | ((rs >> 12) & 1048320) )) = $((0x$mn)) ]; "
        f"then {_fail(MountedExitCode.RESCUE_ROOT)}; fi",
        "rp=$(readlink -f \"$dv\")",
        "while read -r md mr; do case \"$md\" in /dev/*) ;; *) continue;; esac",
        "for x in \"$md\" \"$(readlink -f \"$md\" 2>/dev/null)\"; do",
        f"[ \"$x\" = \"$dv\" ] || [ \"$x\" = \"$rp\" ] && {_fail(MountedExitCode.ALREADY_MOUNTED)}",
        "done; done </proc/mounts",
        f"mkdir -p \"$mp\" || {_fail(MountedExitCode.MOUNT_FAILED)}",
        f"mount \"$dv\" \"$mp\" || {{ rmdir \"$mp\"; {_fail(MountedExitCode.MOUNT_FAILED)}; }}",
        "p=$mp",
        "fact mounted \"$dv\"",
        f"[ -r \"$p/etc/passwd\" ] || {_fail(MountedExitCode.NOT_A_ROOT)}",
        "pw=$(awk -F: -v u=\"$uu\" '$1==u' \"$p/etc/passwd\" | head -n 1)",
        f"[ -n \"$pw\" ] || {_fail(MountedExitCode.NO_SUCH_USER)}",
        "IFS=:; set -- $pw; unset IFS",
        "ui=$3; gi=$4; hh=$6",
        "fact uid \"$ui\"; fact gid \"$gi\"; fact home \"$hh\"",
        f"case \"$hh\" in /*) ;; *) {_fail(MountedExitCode.NO_HOME)};; esac",
        "x=$p; IFS=/; set -- $hh; unset IFS",
        f"for c in \"$@\" .ssh .ssh/authorized_keys; do [ -n \"$c\" ] || continue; case \"$c\" in .ssh*) y=$p$hh/$c;; "
        f"*) x=$x/$c; y=$x;; esac; [ -L \"$y\" ] && {_fail(MountedExitCode.SYMLINK)}; done",
        "hd=$p$hh",
        f"[ -d \"$hd\" ] || {_fail(MountedExitCode.NO_HOME)}",
        "d=$hd/.ssh; f=$d/authorized_keys; nf=",
        "if [ -d \"$d\" ]; then fact ssh_dir_created no",
        f"else mkdir \"$d\" && chown \"$ui:$gi\" \"$d\" || {_fail(ExitCode.NO_SSH_DIR)}",
        "fact ssh_dir_created yes",
        "fi",
        "[ -e \"$f\" ] || nf=1",
        _Fact("snapshot before"),
        *_assign("k", public_line, secret=False),
        f"t=$(mktemp \"$d/.recovery-XXXXXX\") || {_fail(ExitCode.NO_TEMP_FILE)}",
        f"printf '{key_format}' \"$k\" >\"$t\" || {_fail(ExitCode.NO_TEMP_FILE)}",
        "fact source typed",
        "if digest \"$t\"; then",
        f"[ \"$h\" = \"$w\" ] || {_fail(ExitCode.TYPED_KEY_ALTERED)}",
        "fact checksum verified",
        "else fact checksum unavailable",
        "fi",
        *_APPEND,
        "if [ -n \"$nf\" ]; then chown \"$ui:$gi\" \"$f\" || " + _fail(ExitCode.CHMOD_FAILED) + "; "
        "fact owner_set \"$ui:$gi\"; else fact owner_set kept; fi",
        "if [ -r \"$p/etc/selinux/config\" ] && grep -Eq '^SELINUX=(enforcing|permissive)' \"$p/etc/selinux/config\"",
        "then : >\"$p/.autorelabel\" && fact selinux relabel-scheduled; else fact selinux off; fi",
        _Fact("snapshot after"),
        "sync",
        "fact exit 0",
        "} </dev/null",
    ]
    chosen = (line.line if isinstance(line, _Fact) else line for line in lines)
    return GuestScript(lines=tuple(chosen), nonce=nonce)
