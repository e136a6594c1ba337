"""Plug-ins found through entry points: a step type, a channel and a publisher from an installed package."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

STEPS = '''
from dataclasses import dataclass
from recovery.engine.registry import doc, step

@dataclass(frozen=True)
class HelloParams:
    name: str = doc("who to greet")

@step("plug.hello", params=HelloParams, outputs={"greeting": "the greeting"}, repeatable=True, changes=False)
def hello(ctx, params):
    """Greet someone (a plug-in's step)."""
    return {"greeting": f"hello {params.name}"}
'''

CHANNEL = '''
class EchoChannel:
    has_output = True
    def __init__(self, url): self.url = url
    def open(self, timeout): pass
    def check_typeable(self, data): pass
    def send(self, data): pass
    def read(self, timeout): return ""
    def close(self): pass
'''

PUBLISHER = '''
class MemoryPublisher:
    scheme = "mem"
    def publish(self, name, data, ttl): raise NotImplementedError
    def withdraw(self, item): pass
    def close(self): pass
'''


def install(site: Path, entry_points: str) -> dict[str, str]:
    """A package `recplug` with its dist-info on a path of its own, as pip would install it."""
    package = site / "recplug"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "steps.py").write_text(STEPS)
    (package / "chan.py").write_text(CHANNEL)
    (package / "pub.py").write_text(PUBLISHER)
    info = site / "recplug-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: recplug\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}


GOOD = """
    [recovery.steps]
    plug = recplug.steps
    [recovery.channels]
    echo = recplug.chan:EchoChannel
    ws = recplug.chan:EchoChannel
    [recovery.publishers]
    mem = recplug.pub:MemoryPublisher
"""


def python(env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          check=False)


def test_a_plugins_step_channel_and_publisher_are_used(tmp_path: Path) -> None:
    env = install(tmp_path / "site", GOOD)
    listed = subprocess.run([sys.executable, "-m", "recovery", "steps"], env=env, capture_output=True, text=True,
                            check=True)
    assert "plug.hello: Greet someone (a plug-in's step)." in listed.stdout
    book = tmp_path / "book.yaml"
    book.write_text("steps:\n  - id: hi\n    uses: plug.hello\n    with: {name: ops}\n")
    result = python(env, f"""
        import recovery
        from recovery.channels import channel_for
        from recovery.publishers import load_publisher_class
        from recovery.engine.config import Config, JournalConfig
        from pathlib import Path
        report = recovery.run({str(book)!r}, config=Config(journal=JournalConfig(dir=Path({str(tmp_path)!r}) / "runs")))
        print(report.status)
        print(type(channel_for("echo://console/1")).__name__)
        print(type(channel_for("ws://127.0.0.1:9/")).__name__)
        print(load_publisher_class("mem").__name__)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["succeeded", "EchoChannel", "SerialWebSocketChannel", "MemoryPublisher"]
    assert "'ws' is built in" in result.stderr  # the plug-in's claim on ws:// is refused, loudly


@pytest.mark.parametrize("command", [["steps"], ["validate", "playbooks/restore-access-serial.yaml"]])
def test_a_broken_plugin_is_named_in_a_usage_error(tmp_path: Path, command: list[str]) -> None:
    env = install(tmp_path / "site", "[recovery.steps]\nbroken = recplug.no_such_module\n")
    result = subprocess.run([sys.executable, "-m", "recovery", *command], env=env, capture_output=True, text=True,
                            cwd=ROOT, check=False)
    assert result.returncode == 2
    named = "plug-in 'broken' (recovery.steps = 'recplug.no_such_module', from recplug) cannot be loaded"
    assert named in result.stderr
    assert "Traceback" not in result.stderr
