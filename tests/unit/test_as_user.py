"""`recovery.guest.as_user_argv`, run for real as root: the guest agent's switch to the user.

Each run gets its own /etc/passwd and /etc/shadow (a private mount namespace, as test_guest_script does for
/etc/ssh), so the lines the switch reads are the test's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from recovery.guest import as_user_argv

PASSWD = (
    "root:x:0:0:root:/root:/bin/bash\n"
    "debianx:x:1234:1234::/home/x:/bin/sh\n"
    "debian:x:1001:1002:Debian User, Room 1:/srv/home dir:/bin/bash\n"
    "noshell:x:1003:1003::/home/noshell:\n"
)
# su asks PAM, which reads the users' shadow lines: no password anywhere, as on a cloud image.
SHADOW = "".join(f"{line.split(':')[0]}:*:20000:0:99999:7:::\n" for line in PASSWD.splitlines())
SHOW = 'echo "$(id -u) $(id -g) $(id -G)|$HOME|$USER|$LOGNAME|$SHELL"\n'


def switch(
    tmp_path: Path, user: str, script: str, path: str = "/usr/sbin:/usr/bin:/sbin:/bin"
) -> subprocess.CompletedProcess[str]:
    if os.geteuid() != 0:
        pytest.fail("run the unit tests as root: the switch to the user needs it")
    passwd, shadow = tmp_path / "passwd", tmp_path / "shadow"
    passwd.write_text(PASSWD)
    shadow.write_text(SHADOW)
    shadow.chmod(0o640)
    mounts = '/usr/bin/mount --bind "$0" /etc/passwd && /usr/bin/mount --bind "$1" /etc/shadow && shift && exec "$@"'
    argv = ["/usr/bin/unshare", "--mount", "/bin/sh", "-c", mounts, str(passwd), str(shadow), *as_user_argv(user)]
    return subprocess.run(argv, input=script, capture_output=True, text=True, timeout=30, check=False,
                          env={"PATH": path}, cwd="/")


def test_the_user_gets_the_ids_home_and_shell_of_its_passwd_line(tmp_path: Path) -> None:
    done = switch(tmp_path, "debian", SHOW)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "1001 1002 1002|/srv/home dir|debian|debian|/bin/bash\n"


def test_the_whole_script_on_stdin_reaches_the_users_shell(tmp_path: Path) -> None:
    padding = "".join(f": line {number} of padding, more than a pipe holds\n" for number in range(4000))
    done = switch(tmp_path, "noshell", padding + "echo the last line ran as $(id -u)\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "the last line ran as 1003\n"


def test_a_user_that_passwd_does_not_list_is_left_to_runuser(tmp_path: Path) -> None:
    done = switch(tmp_path, "nosuch", SHOW)
    assert done.returncode != 0
    assert "runuser: user nosuch does not exist" in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("switch_tool", ["runuser", "su"])
def test_without_setpriv_runuser_or_su_switches(tmp_path: Path, switch_tool: str) -> None:
    tools = Path(tempfile.mkdtemp(prefix="tools-"))  # pytest's tmp_path is root's alone: the user runs these
    tools.chmod(0o755)
    for name in (switch_tool, "id", "sh"):
        found = shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
        assert found, f"{name} is missing"
        (tools / name).symlink_to(found)
    try:
        done = switch(tmp_path, "debian", SHOW, path=str(tools))
    finally:
        shutil.rmtree(tools)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("1001 1002 1002|/srv/home dir|debian|debian|")


def test_only_a_plain_login_name_is_taken() -> None:
    with pytest.raises(ValueError, match="login name"):
        as_user_argv("debian; reboot")
