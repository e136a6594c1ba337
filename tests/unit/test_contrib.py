"""The shipped systemd units and cron line: hardened, and still valid command lines for today's CLI."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

from recovery.cli.main import build_parser

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"


def unit(name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keep the case of systemd settings
    parser.read(CONTRIB / "systemd" / name)
    return parser[name.rsplit(".", 1)[1].capitalize()]


def recovery_args(command: str) -> list[str]:
    words = shlex.split(command.replace("${CREDENTIALS_DIRECTORY}", "/run/credentials/x"))
    return words[next(i for i, word in enumerate(words) if word.endswith("/recovery")) + 1 :]


def test_the_service_is_hardened_and_bounded() -> None:
    service = unit("recovery-audit.service")
    for setting, value in {
        "DynamicUser": "yes",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "TimeoutStartSec": "15min",
        "CapabilityBoundingSet": "",
    }.items():
        assert service[setting] == value, setting


def test_the_service_and_the_cron_line_parse_with_the_cli() -> None:
    cron = next(line for line in (CONTRIB / "cron" / "recovery-audit").read_text().splitlines()
                if line and not line.startswith("#"))
    assert " flock -n " in cron
    for command in (unit("recovery-audit.service")["ExecStart"], cron):
        args = build_parser().parse_args(recovery_args(command))
        assert args.command == "audit"
        assert args.format == "prometheus"
        assert str(args.output).startswith("/var/lib/node_exporter/textfile/")


def test_the_timer_starts_the_service() -> None:
    timer = unit("recovery-audit.timer")
    assert timer["OnCalendar"] == "hourly"
    assert timer["Persistent"] == "true"
