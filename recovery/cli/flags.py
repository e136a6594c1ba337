"""Flags that several fleet commands share, declared once so they read and behave the same."""

from __future__ import annotations

import argparse


def add_jump_flags(parser: argparse.ArgumentParser, *, key_default: str) -> None:
    """`--jump`, `--jump-keys`, `--jump-host-keys`: ProxyJump hops for hosts whose inventory names none.

    `key_default` says which key a hop logs in with when `--jump-keys` gives none.
    """
    parser.add_argument("--jump", metavar="USER@HOST:PORT[,...]",
                        help="jump hosts (bastions) before hosts whose inventory names none, as ssh -J")
    parser.add_argument("--jump-keys", metavar="PATH[,...]",
                        help=f"private keys for the jump hosts, in the same order (default: {key_default})")
    parser.add_argument("--jump-host-keys", metavar="SHA256:...[,...]",
                        help="host key pins of the jump hosts, in the same order (else --known-hosts decides)")
