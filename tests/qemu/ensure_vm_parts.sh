#!/usr/bin/env bash
# Unpack the parts of the test VM (tests/e2e/qemu_vm.py) into .cache/qemu-vm, once: a kernel and
# its e1000 module from Debian's current linux-image package, and busybox-static's busybox. The
# packages are downloaded and unpacked, not installed: installing busybox-static would replace
# the system's busybox, and a kernel package would run initramfs hooks for nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
parts=.cache/qemu-vm
[ -s "$parts/vmlinuz" ] && [ -s "$parts/e1000.ko" ] && [ -s "$parts/busybox" ] && exit 0
command -v qemu-system-x86_64 >/dev/null || { echo "qemu-system-x86_64 is missing: apt-get install qemu-system-x86" >&2; exit 1; }
kernel_package() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
kernel=$(kernel_package)
if [ -z "$kernel" ] && [ "$(id -u)" = 0 ]; then apt-get update -qq && kernel=$(kernel_package); fi
[ -n "$kernel" ] || { echo "apt knows no linux-image-amd64: run apt-get update" >&2; exit 1; }
work=$(mktemp -d)
chmod 755 "$work"  # apt downloads as _apt
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -qq "$kernel" busybox-static)
dpkg-deb -x "$work/${kernel}"_*.deb "$work/kernel"
dpkg-deb -x "$work"/busybox-static_*.deb "$work/busybox"
mkdir -p "$parts"
cp "$work"/kernel/boot/vmlinuz-* "$parts/vmlinuz.tmp" && mv "$parts/vmlinuz.tmp" "$parts/vmlinuz"
find "$work/kernel/lib/modules" -name e1000.ko -exec cp {} "$parts/e1000.ko" \;
cp "$work/busybox/bin/busybox" "$parts/busybox"
echo "test VM parts in $parts: $kernel, busybox-static"
