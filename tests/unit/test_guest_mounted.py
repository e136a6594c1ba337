"""The mounted-root install (rescue route), run for real under dash and busybox ash, as root.

The "server's disk" is a directory tree; the "device" a block device node made with mknod, and
`mount` on PATH bind-mounts the tree where the script asks (stat, umount, awk... are the real
ones). So the script's own rules run for real: owner from the mounted etc/passwd (a uid/gid this
machine does not have), backup, final newline, append-if-absent, modes, symlinks refused, the
rescue system's own root refused by device number, and unmounted on every exit.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.guest import MountedExitCode, build_mounted_install_script, parse_report
from recovery.ssh.keys import generate_keypair

UID, GID = 4242, 4343
SHELLS = {"dash": ("/usr/bin/dash",), "busybox": ("/usr/bin/busybox", "sh")}

pytestmark = pytest.mark.root("mounts and mknod need root")


class Disk:
    """A server root tree, a block device node standing for it, and a PATH whose `mount` binds it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "server"
        (self.root / "etc").mkdir(parents=True)
        (self.root / "home" / "debian").mkdir(parents=True)
        os.chown(self.root / "home" / "debian", UID, GID)
        (self.root / "etc" / "passwd").write_text(
            f"root:x:0:0:root:/root:/bin/bash\ndebian:x:{UID}:{GID}:Debian:/home/debian:/bin/bash\n"
        )
        self.device = base / "vdb"
        os.mknod(self.device, 0o600 | 0o060000, os.makedev(7, 250))  # a block device, not the host's root
        self.bin = base / "bin"
        self.bin.mkdir()
        mount = self.bin / "mount"
        real = shutil.which("mount")
        mount.write_text(f"#!/bin/sh\nexec {real} --bind {self.root} \"$2\"\n")
        mount.chmod(0o755)
        self.mounts = base / "mnt"
        self.mounts.mkdir()

    def run(self, shell: str, key: str, *, device: Path | None = None, user: str = "debian") -> tuple[int, str]:
        nonce = "a1b2c3d4"
        script = build_mounted_install_script(
            key, sha256=hashlib.sha256(f"{key}\n".encode()).hexdigest(), nonce=nonce,
            device=str(device or self.device), user=user, run_tag="run-1", mount_base=str(self.mounts),
        )
        completed = subprocess.run(
            [*SHELLS[shell]], input=script.raw(), capture_output=True, text=True, timeout=60, check=False,
            env={"PATH": f"{self.bin}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/nonexistent"},
        )
        return completed.returncode, completed.stdout + completed.stderr

    def keys(self) -> Path:
        return self.root / "home" / "debian" / ".ssh" / "authorized_keys"


@pytest.fixture
def disk() -> Iterator[Disk]:
    base = Path(tempfile.mkdtemp(prefix="rcv-mounted-"))
    yield Disk(base)
    for leftover in base.glob("mnt/*"):  # a failed test must not leave a bind mount behind
        subprocess.run(["umount", str(leftover)], check=False, capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


def _key(tmp: Path) -> str:
    return generate_keypair(tmp / "id_ed25519").public_line


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_the_key_gets_the_owner_of_the_mounted_passwd_and_the_disk_is_unmounted(disk: Disk, shell: str) -> None:
    key = _key(disk.base)
    code, output = disk.run(shell, key)
    assert code == 0, output
    facts = dict(parse_report(output, "a1b2c3d4").facts)
    assert (facts["uid"], facts["gid"], facts["ssh_dir_created"], facts["added"]) == (str(UID), str(GID), "yes", "yes")
    assert facts["unmounted"] == "yes"
    assert list(disk.mounts.iterdir()) == []  # unmounted and its directory removed
    ssh_dir = disk.keys().parent
    assert (ssh_dir.stat().st_uid, ssh_dir.stat().st_gid, ssh_dir.stat().st_mode & 0o777) == (UID, GID, 0o700)
    info = disk.keys().stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (UID, GID, 0o600)
    assert disk.keys().read_text() == key + "\n"
    assert facts["selinux"] == "off"
    assert not (disk.root / ".autorelabel").exists()


def test_an_existing_file_keeps_its_owner_and_lines_gets_a_newline_a_backup_and_the_key_once(disk: Disk) -> None:
    disk.keys().parent.mkdir(mode=0o700)
    os.chown(disk.keys().parent, UID, GID)
    disk.keys().write_text("ssh-ed25519 AAAAold old-key")  # no final newline
    os.chown(disk.keys(), UID, GID)
    key = _key(disk.base)
    code, output = disk.run("busybox", key)
    assert code == 0, output
    assert disk.keys().read_text() == f"ssh-ed25519 AAAAold old-key\n{key}\n"
    assert (disk.keys().stat().st_uid, disk.keys().stat().st_gid) == (UID, GID)
    assert (disk.keys().parent / "authorized_keys.recovery-run-1").read_text() == "ssh-ed25519 AAAAold old-key"
    code, output = disk.run("busybox", key)  # a second attempt of the same run
    assert code == 0, output
    assert dict(parse_report(output, "a1b2c3d4").facts)["added"] == "already-present"
    assert disk.keys().read_text().count(key) == 1


def test_selinux_on_the_server_schedules_a_relabel(disk: Disk) -> None:
    (disk.root / "etc" / "selinux").mkdir()
    (disk.root / "etc" / "selinux" / "config").write_text("SELINUX=enforcing\nSELINUXTYPE=targeted\n")
    code, output = disk.run("dash", _key(disk.base))
    assert code == 0, output
    assert (disk.root / ".autorelabel").exists()


@pytest.mark.parametrize("link", ["home", "ssh_dir", "keys"])
def test_a_symlink_on_the_way_is_refused_not_followed(disk: Disk, link: str) -> None:
    target = disk.base / "elsewhere"
    target.mkdir()
    if link == "home":
        shutil.rmtree(disk.root / "home")
        (disk.root / "home").symlink_to(target)
        (target / "debian").mkdir()
    elif link == "ssh_dir":
        (disk.root / "home" / "debian" / ".ssh").symlink_to(target)
    else:
        disk.keys().parent.mkdir()
        disk.keys().symlink_to(target / "authorized_keys")
    code, output = disk.run("busybox", _key(disk.base))
    assert code == MountedExitCode.SYMLINK, output
    assert list(target.rglob("*")) in ([], [target / "debian"])  # nothing written through the link
    assert list(disk.mounts.iterdir()) == []


def test_a_user_missing_from_the_mounted_passwd_is_refused_and_nothing_changes(disk: Disk) -> None:
    code, output = disk.run("dash", _key(disk.base), user="ubuntu")
    assert code == MountedExitCode.NO_SUCH_USER, output
    assert not (disk.root / "home" / "debian" / ".ssh").exists()
    assert list(disk.mounts.iterdir()) == []


def test_the_rescue_systems_own_root_is_refused_by_device_number_before_mounting(disk: Disk) -> None:
    own = os.stat("/").st_dev
    device = disk.base / "same-as-root"
    os.mknod(device, 0o600 | 0o060000, os.makedev(os.major(own), os.minor(own)))
    code, output = disk.run("busybox", _key(disk.base), device=device)
    assert code == MountedExitCode.RESCUE_ROOT, output
    assert list(disk.mounts.iterdir()) == []
    assert not (disk.root / "home" / "debian" / ".ssh").exists()


def test_a_disk_without_etc_passwd_is_not_taken_for_a_root(disk: Disk) -> None:
    (disk.root / "etc" / "passwd").unlink()
    code, output = disk.run("dash", _key(disk.base))
    assert code == MountedExitCode.NOT_A_ROOT, output
    assert list(disk.mounts.iterdir()) == []


@pytest.mark.parametrize(("field", "value"), [
    ("device", "/dev/vdb; rm -rf /"), ("device", "/dev/../etc"), ("device", "vdb"), ("user", "de bian"),
    ("mount_base", "relative"),
])
def test_values_that_are_not_plain_are_refused_before_any_script_exists(field: str, value: str) -> None:
    arguments = {"device": "/dev/vdb", "user": "debian", "mount_base": "/mnt", field: value}
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl x"
    with pytest.raises(ValueError, match=field):
        build_mounted_install_script(key, sha256=hashlib.sha256(f"{key}\n".encode()).hexdigest(), nonce="abcd1234",
                                     device=arguments["device"], user=arguments["user"],
                                     mount_base=arguments["mount_base"])
