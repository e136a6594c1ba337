"""`recovery demo`, as a newcomer runs it, and the proof that it leaks nothing."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.e2e.conftest import recovery

pytestmark = pytest.mark.lab

PASSWORD = "Demo-Known-Passw0rd-4711"


def test_the_demo_recovers_the_lab_and_leaks_neither_password_nor_private_key() -> None:
    result = recovery("-vv", "demo", env={"RECOVERY_CONSOLE_PASSWORD": PASSWORD})
    assert result.code == 0, result.stderr
    assert "SUCCEEDED" in result.stdout
    assert "still logs in" in result.stderr
    kept = re.search(r"keys and journal kept in (\S+)", result.stderr)
    assert kept, result.stderr
    base = Path(kept.group(1))
    try:
        _assert_nothing_leaked(base, result.stdout, result.stderr)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _assert_nothing_leaked(base: Path, stdout: str, stderr: str) -> None:
    private_keys = [p for p in (base / "keys").rglob("id_*") if not p.name.endswith(".pub")]
    assert len(private_keys) == 1
    key_body = [
        line for line in private_keys[0].read_text().splitlines() if line and not line.startswith("-----")
    ]
    assert key_body
    files = [p for p in base.rglob("*") if p.is_file() and p != private_keys[0]]
    assert any(p.name == "transcript.log" for p in files)
    assert any(p.name == "sshd.log" for p in files)
    haystacks = {"stdout": stdout, "stderr": stderr}
    haystacks.update({str(p): p.read_text(errors="replace") for p in files})
    for where, text in haystacks.items():
        assert PASSWORD not in text, f"the console password leaked into {where}"
        for line in key_body:
            assert line not in text, f"private key material leaked into {where}"
