#!/usr/bin/env bash
# Build the guest-agent test VM into .cache/agent-vm, once: a small Debian 12 guest like a cloud
# image (systemd, sshd, qemu-guest-agent) whose user `debian` has no usable password (`*`: key
# logins only, nothing to type on a console) and one old key, and a pinned sshd host key.
# Offline-friendly: debootstrap reads the mirror apt already uses; `mkfs.ext4 -d` fills the disk
# image without a loop device or a mount. The kernel and initrd are copied out of the guest so
# QEMU boots them directly (no boot loader to wait for).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${AGENT_VM_DIR:-.cache/agent-vm}
[ -s "$out/base.qcow2" ] && [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ] && [ -s "$out/host_ed25519.pub" ] \
  && [ -s "$out/old_key" ] && exit 0
for tool in debootstrap qemu-img mkfs.ext4 ssh-keygen; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || {
    echo "$tool is missing: apt-get install -y --no-install-recommends debootstrap qemu-utils e2fsprogs openssh-client" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "building the agent test VM needs root (debootstrap, chroot)" >&2; exit 1; }

# The mirror apt already uses (deb822 .sources first, then one-line sources.list), unless given.
mirror=${AGENT_VM_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(awk '/^URIs:/ {u=$2} /^Suites:/ && / bookworm( |$)/ && u ~ /debian$/ {print u; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
fi
if [ -z "$mirror" ]; then
  mirror=$(awk '$1=="deb" && $3=="bookworm" {print $2; exit}' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}

start=$(date +%s)
# In memory where there is room: dpkg's fsyncs and the 2 GB image cost nothing there.
scratch=${TMPDIR:-/tmp}
[ "$(df --output=avail -k /dev/shm 2>/dev/null | tail -1)" -gt 4000000 ] 2>/dev/null && scratch=/dev/shm
work=$(mktemp -d "$scratch/agent-vm.XXXXXX")
root=$work/root
# A debootstrap that failed half-way can leave /proc, /sys or /dev mounted in the root: unmount
# those first, and never let rm cross into another file system.
cleanup() {
  awk -v root="$root/" 'index($2 "/", root) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
include=systemd-sysv,udev,openssh-server,qemu-guest-agent,linux-image-amd64,iproute2,netbase,sudo,kmod,dbus
# debootstrap fetches one package per connection (~2 minutes here); apt-get download fetches the same
# ~150 packages over one pipelined connection in seconds. debootstrap takes each from --cache-dir when
# its checksum matches the mirror's, and downloads itself whatever apt's lists do not have.
mkdir -p "$work/debs"
chown _apt "$work/debs" 2>/dev/null || chmod 777 "$work/debs"
if debootstrap --print-debs --variant=minbase --include="$include" bookworm "$work/resolve" "$mirror" \
     >"$work/debs.list" 2>"$work/resolve.log"; then
  # Without package lists (a fresh machine), apt knows no versions: read them once, then try again.
  (cd "$work/debs" && apt-get download -qq $(cat "$work/debs.list") >/dev/null 2>&1) \
    || { apt-get update -qq >/dev/null 2>&1 && (cd "$work/debs" && apt-get download -qq $(cat "$work/debs.list") >/dev/null 2>&1); } \
    || true
fi
# No fsync per file while unpacking (the image is rebuilt from scratch if anything breaks), and no
# initramfs with every module in it: one with the few modules a virtio guest needs is built below.
mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
echo force-unsafe-io >"$root/etc/dpkg/dpkg.cfg.d/agentvm-unsafe-io"
INITRD=No debootstrap --cache-dir="$work/debs" --variant=minbase --include="$include" \
  bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
rm -f "$root/etc/dpkg/dpkg.cfg.d/agentvm-unsafe-io"
echo MODULES=list >"$root/etc/initramfs-tools/conf.d/agentvm"
printf '%s\n' virtio_pci virtio_blk virtio_net virtio_console ext4 >>"$root/etc/initramfs-tools/modules"
chroot "$root" update-initramfs -c -k all >"$work/initramfs.log" 2>&1 || { tail -20 "$work/initramfs.log" >&2; exit 1; }

echo agentvm >"$root/etc/hostname"
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
echo 'LABEL=rootfs / ext4 rw,errors=remount-ro 0 1' >"$root/etc/fstab"
cat >"$root/etc/systemd/network/80-dhcp.network" <<'NET'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
NET
ln -sf /lib/systemd/system/systemd-networkd.service "$root/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
# Nothing on the guest may wait for a network that QEMU's restricted user network never gives.
ln -sf /dev/null "$root/etc/systemd/system/systemd-networkd-wait-online.service"
for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer man-db.timer; do
  ln -sf /dev/null "$root/etc/systemd/system/$unit"
done

# sshd: one pinned ed25519 host key of ours, keys only.
rm -f "$root"/etc/ssh/ssh_host_*
mkdir -p "$out"
ssh-keygen -q -t ed25519 -N '' -C agentvm-host -f "$work/host_ed25519"
install -m 600 "$work/host_ed25519" "$root/etc/ssh/ssh_host_ed25519_key"
install -m 644 "$work/host_ed25519.pub" "$root/etc/ssh/ssh_host_ed25519_key.pub"
cat >"$root/etc/ssh/sshd_config.d/agentvm.conf" <<'SSHD'
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
LogLevel VERBOSE
SSHD

# The user of a cloud image: no usable password ('*', not '!': sshd's key login still works).
chroot "$root" useradd -m -s /bin/bash debian
chroot "$root" usermod -p '*' debian
ssh-keygen -q -t ed25519 -N '' -C old-key -f "$work/old_key"
install -d -m 700 "$root/home/debian/.ssh"
install -m 600 "$work/old_key.pub" "$root/home/debian/.ssh/authorized_keys"
chroot "$root" chown -R debian:debian /home/debian/.ssh

cp "$root"/boot/vmlinuz-* "$work/vmlinuz"
cp "$root"/boot/initrd.img-* "$work/initrd.img"
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
truncate -s 2G "$work/disk.raw"
mkfs.ext4 -q -L rootfs -d "$root" "$work/disk.raw"
qemu-img convert -O qcow2 "$work/disk.raw" "$work/base.qcow2"

for part in vmlinuz initrd.img host_ed25519.pub old_key old_key.pub; do cp "$work/$part" "$out/$part.tmp"; done
chmod 600 "$out/old_key.tmp"
mv "$work/base.qcow2" "$out/base.qcow2.tmp"
for part in vmlinuz initrd.img host_ed25519.pub old_key old_key.pub base.qcow2; do mv "$out/$part.tmp" "$out/$part"; done
echo "agent test VM in $out: built in $(( $(date +%s) - start )) s from $mirror"
