"""The key install command for a VNC console whose screen is read: as short as its safety allows.

On QEMU's VNC server (libvirt, Nova) every typed character costs two to four key events at 10 ms
each, so the length of the command is the time of the install. recovery.guest's script is made to
be read by nobody and to survive anything; where the screen is read, the status marker and a few
fact lines come back, and this one keeps only what protects the file:

- the key is checked against its sha256 before anything changes (exit 15 if the typed text was
  altered on the way; `checksum unavailable` where neither sha256sum nor busybox has one);
- a missing ~/.ssh is created 0700 (umask 077): the only change made before the check;
- authorized_keys is copied aside once per run (`cp -p`, never over an earlier copy);
- a missing final newline is added before appending, so the new key is not glued to the last one;
- the key is appended only if the exact line is absent, and checked to be there after;
- modes 700/600, and restorecon where there is one.

Exit statuses are recovery.guest.ExitCode's; facts are `parse_report`'s (``ssh_dir_created``,
``checksum``, ``backup``, ``newline_added``, ``added``). It runs from a quoted here-document in a
`{ ... } </dev/null` group, like the long script, so nothing in it can read the rest of the script.
A key the short form cannot carry (a `'` or `!` in its comment) or a key to download gets the long
script with compact facts instead (`terse_install_script` returns None).
"""

from __future__ import annotations

import hashlib
import re

from recovery.guest import build_install_script

_SAFE_TAG = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def terse_install_script(public_line: str, *, sha256: str, nonce: str, run_tag: str | None = None) -> list[str] | None:
    """The lines of the short install script, or None where only the long one is safe.

    Raises:
        KeyGenerationError, ValueError: as `recovery.guest.build_install_script` (which validates the
            same arguments first).
    """
    build_install_script(public_line, sha256=sha256, nonce=nonce, run_tag=run_tag, facts=False)  # validates
    tag = run_tag or nonce
    if "'" in public_line or "!" in public_line or not _SAFE_TAG.fullmatch(tag):
        return None
    digest = sha256.lower()
    key_format = "%s\\n" if digest == hashlib.sha256(f"{public_line}\n".encode()).hexdigest() else "%s"
    return [
        "{",
        f"n={nonce}",
        "f(){ printf 'RCV-%s %s=%s\\n' $n $1 \"$2\";}",
        "cd||exit 10",
        "umask 077",
        "[ -d .ssh ]||{ mkdir .ssh||exit 10;f ssh_dir_created yes;}",
        "a=.ssh/authorized_keys",
        f"k='{public_line}'",
        f"h=$(printf '{key_format}' \"$k\"|sha256sum 2>/dev/null||printf '{key_format}' \"$k\"|busybox sha256sum)",
        f"[ -z \"$h\" ]&&f checksum unavailable||{{ [ \"${{h%% *}}\" = {digest} ]||exit 15;f checksum verified;}}",
        "b=none",
        f"[ -e $a ]&&{{ b=$PWD/$a.recovery-{tag};[ -e \"$b\" ]||cp -p $a \"$b\"||exit 17;}}",
        "f backup \"$b\"",
        "[ -s $a ]&&[ -n \"$(tail -c1 $a)\" ]&&{ echo>>$a||exit 18;f newline_added yes;}",
        "grep -qxF -e \"$k\" $a 2>/dev/null&&f added already-present||"
        "{ printf '%s\\n' \"$k\">>$a&&grep -qxF -e \"$k\" $a||exit 18;f added yes;}",
        "chmod 700 .ssh&&chmod 600 $a||exit 19",
        "command -v restorecon >/dev/null&&restorecon -R .ssh;:",
        "} </dev/null",
    ]
