"""`recovery revoke --cloud --jump`: the cloud's servers are reached through the jump hosts too."""

from __future__ import annotations

import io
from collections.abc import Sequence

import pytest

from recovery.audit.model import Host
from recovery.cli.main import main
from recovery.cloud import Server
from recovery.revoke.engine import HostOutcome, RevokeRequest
from recovery.ssh.jump import JumpHop
from recovery.ssh.keys import generate_keypair
from tests.unit.test_revoke_cloud import FakeCloud


def test_the_clouds_servers_take_the_jump_flags(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path_factory.mktemp("keys")
    admin, stolen = (generate_keypair(directory / name, comment=name) for name in ("admin", "stolen"))
    fake = FakeCloud(servers=[Server("srv-1", "web-1", "ACTIVE", {})])
    monkeypatch.setattr("recovery.revoke.command._open_cloud", lambda name: fake)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    seen: list[Host] = []

    def revoke_fleet(hosts: Sequence[Host], request: RevokeRequest) -> list[HostOutcome]:
        seen.extend(hosts)
        return []

    monkeypatch.setattr("recovery.revoke.engine.revoke_fleet", revoke_fleet)

    main(["revoke", "--public-key", str(stolen.public_path), "--cloud", "fake", "--user", "ops", "--key",
          str(admin.private_path), "--format", "json", "--jump", "ops@bastion:2222"])
    capsys.readouterr()

    assert [host.jumps for host in seen] == [(JumpHop("bastion", 2222, "ops"),)]
