"""The guest-agent test VM: a small Debian 12 guest under QEMU, booted once, restored per test."""
