"""The inventory contract: what a valid file gives, and every problem of an invalid one with file:line.

Each invalid case is a file in tests/cases/audit/inventory/invalid with the
exact problem lines expected beside it (`NAME.expected`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from recovery.audit.inventory import HostDefaults, load_inventory
from recovery.audit.model import Host
from recovery.errors import UsageError

CASES = Path(__file__).resolve().parents[1] / "cases" / "audit" / "inventory"
INVALID = sorted(path.stem for path in (CASES / "invalid").glob("*.yaml"))


@pytest.mark.parametrize("case", INVALID)
def test_invalid_inventory_lists_every_problem_with_file_and_line(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CASES / "invalid")  # messages name the file as given: here, a bare file name
    expected = (CASES / "invalid" / f"{case}.expected").read_text().splitlines()

    with pytest.raises(UsageError) as caught:
        load_inventory(Path(f"{case}.yaml"), HostDefaults())

    lines = str(caught.value).splitlines()
    assert lines[0].startswith("invalid inventory")
    assert [line.strip() for line in lines[1:]] == expected


def test_valid_inventory_merges_host_fields_defaults_and_command_line() -> None:
    path = CASES / "valid" / "fleet.yaml"

    hosts = load_inventory(path, HostDefaults(user="fallback", keys=(Path("/cli/key"),)))

    inputs = (("publish", "inline"), ("key_type", "ed25519"))
    secrets = (("console_password", path.parent / "secrets" / "console"),)
    assert hosts == [
        Host(
            name="web-1",
            address="203.0.113.10",
            port=22,
            user="ubuntu",
            keys=(path.parent / "keys" / "audit",),
            host_key="SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8",
            inputs=inputs,
            secrets=secrets,
        ),
        Host(
            "web-2",
            "web-2.example.com",
            2222,
            "ops",
            (Path("/etc/recovery/ops_ed25519"),),
            inputs=(
                ("publish", "inline"),
                ("key_type", "rsa"),
                ("key_bits", "4096"),
                ("console_url", "wss://console.example.com/?token=abc"),
            ),
            secrets=(("console_password", Path("/etc/recovery/web-2.password")),),
        ),
        Host("pending", None, 22, "ubuntu", (path.parent / "keys" / "audit",), inputs=inputs, secrets=secrets),
        Host("unnumbered", None, 22, "ubuntu", (path.parent / "keys" / "audit",), inputs=inputs, secrets=secrets),
    ]


def test_the_command_line_fills_in_what_the_file_leaves_out(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text("hosts:\n  - {name: a, host: 10.0.0.1}\n")

    [host] = load_inventory(path, HostDefaults(user="ops", keys=(Path("/k1"), Path("/k2"))))

    assert (host.user, host.keys) == ("ops", (Path("/k1"), Path("/k2")))


def test_a_host_without_user_or_key_anywhere_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text("hosts:\n  - {name: a, host: 10.0.0.1}\n")

    with pytest.raises(UsageError) as caught:
        load_inventory(path, HostDefaults())

    assert f"{path}:2: hosts[0]: host 'a' has no user" in str(caught.value)
    assert f"{path}:2: hosts[0]: host 'a' has no key" in str(caught.value)


def test_an_unreadable_inventory_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read inventory"):
        load_inventory(tmp_path / "missing.yaml", HostDefaults())
