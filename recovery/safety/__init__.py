"""Handling what an incident hands us: user files that may be hostile, and secrets that must not leak.

Every user file is read through `readers`, every report and key is written through `files`,
and every text that leaves the process (log, journal, transcript) goes through `redact`.
"""
