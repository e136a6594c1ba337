"""Which files sshd reads a user's keys from, so a revoke takes a stolen key out of every one.

sshd reads every file AuthorizedKeysFile names, not only ``~/.ssh/authorized_keys``: Debian's and
Ubuntu's compiled-in default is ``.ssh/authorized_keys .ssh/authorized_keys2``, and some fleets keep
keys in root-owned ``/etc/ssh/authorized_keys/%u``. A key left in any of them still logs in.

The guest reports what it can see (`recovery.guest.build_key_files_script`): ``sshd -T``'s answer
for the user where sshd can be run (root, or ``sudo -n``), which applies Match blocks and
Includes; else the configuration files' lines, which are followed here in sshd's order (an Include
read in place, the first value of a keyword winning) with Match blocks left out, and said to be;
else nothing, and sshd's default is assumed, and said to be. Tokens are expanded as sshd does
(auth.c: ``%%``, ``%h``, ``%u``, ``%U``; a relative path starts at the home directory).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from recovery.guest import KeyFilesReport

__all__ = ["DEFAULT_FILES", "KeySources", "expand", "for_user", "from_config"]

DEFAULT_FILES = ".ssh/authorized_keys .ssh/authorized_keys2"  # sshd's default when nothing sets it
_MAX_INCLUDE_DEPTH = 16  # sshd's READCONF_MAX_DEPTH
_KEYWORD = re.compile(r"\s*([^\s=]+)(?:\s*=\s*|\s+|$)(.*)")


@dataclass(frozen=True)
class KeySources:
    """Where sshd finds a user's keys: files (absolute), a command, and how that was learned."""

    files: tuple[str, ...]
    command: str | None  # AuthorizedKeysCommand, None when there is none
    read_from: str  # "sshd -T", "sshd_config", "sshd's default"
    notes: tuple[str, ...] = ()  # what could not be taken into account

    def summary(self) -> dict[str, object]:
        return {"read_from": self.read_from, "files": list(self.files), "command": self.command,
                "notes": list(self.notes)}


def expand(setting: str, user: str, uid: str, home: str) -> tuple[str, ...]:
    """The absolute paths an AuthorizedKeysFile value names for this user; () for ``none``.

    Raises:
        ValueError: a token sshd does not know (sshd refuses such a configuration too).
    """
    try:
        words = shlex.split(setting)
    except ValueError:
        words = setting.split()
    if [word.lower() for word in words] == ["none"]:
        return ()
    paths: list[str] = []
    for word in words:
        out: list[str] = []
        index = 0
        while index < len(word):
            char = word[index]
            if char != "%":
                out.append(char)
                index += 1
                continue
            token = word[index + 1 : index + 2]
            values = {"%": "%", "h": home, "u": user, "U": uid}
            if token not in values:
                raise ValueError(f"AuthorizedKeysFile {setting!r}: unknown token %{token} (sshd knows %%, %h, %u, %U)")
            out.append(values[token])
            index += 2
        path = "".join(out)
        paths.append(path if path.startswith("/") else f"{home.rstrip('/')}/{path}")
    return tuple(dict.fromkeys(paths))


def from_config(report: KeyFilesReport) -> tuple[str | None, str | None, list[str]]:
    """(AuthorizedKeysFile, AuthorizedKeysCommand, notes) from the configuration lines the guest read.

    None for a keyword no file sets outside a Match block. The notes name what may make the
    answer wrong: a Match block setting either keyword, a file that could not be read.
    """
    files = dict(report.config)
    found: dict[str, str] = {}
    notes: list[str] = [f"{path} could not be read" for path in report.unreadable]
    match_sets: set[str] = set()

    def walk(path: str, depth: int) -> None:
        if depth > _MAX_INCLUDE_DEPTH or path not in files:
            return
        in_match = False
        for line in files[path]:
            parsed = _KEYWORD.match(line)
            if parsed is None:
                continue
            word, value = parsed.group(1).lower(), parsed.group(2).strip()
            if word == "match":
                in_match = True
            elif word in ("authorizedkeysfile", "authorizedkeyscommand"):
                if in_match:
                    match_sets.add(word)
                else:
                    found.setdefault(word, value)
            elif word == "include" and not in_match:
                for pattern in value.split():
                    for included in report.includes.get((path, pattern), ()):
                        walk(included, depth + 1)

    walk(report.main, 0)
    if match_sets:
        names = " and ".join(sorted("AuthorizedKeysFile" if word.endswith("file") else "AuthorizedKeysCommand"
                                    for word in match_sets))
        notes.append(f"a Match block sets {names}, not applied: sshd -T could not run (needs root or sudo -n)")
    return found.get("authorizedkeysfile"), found.get("authorizedkeyscommand"), notes


def for_user(report: KeyFilesReport, user: str) -> KeySources:
    """Where sshd finds `user`'s keys, as far as the report shows; sshd's default where it shows nothing.

    Raises:
        ValueError: the user is not in the guest's passwd database.
    """
    if user not in report.users:
        raise ValueError(f"user {user!r} is not in the passwd database")
    uid, home = report.users[user]
    notes: list[str] = []
    if report.read_from == "sshd-T" and user in report.sshd_t:
        setting, command = report.sshd_t[user]
        read_from = "sshd -T"
    else:
        setting_found, command_found, notes = from_config(report)
        if report.main in dict(report.config):
            read_from = "sshd_config"
        else:
            read_from = "sshd's default"
            notes.append(f"{report.main} could not be read (not root, no sudo -n): sshd's default "
                         f"AuthorizedKeysFile {DEFAULT_FILES} assumed")
        setting, command = setting_found or DEFAULT_FILES, command_found or "none"
    try:
        files = expand(setting or DEFAULT_FILES, user, uid, home)
    except ValueError as exc:
        files, notes = expand(DEFAULT_FILES, user, uid, home), [*notes, f"{exc}: sshd's default assumed"]
    return KeySources(files, None if command.lower() in ("", "none") else command, read_from, tuple(notes))
