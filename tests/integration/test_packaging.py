"""The wheel is a whole product: `pip install` users get the modules and the built-in playbooks.

`recovery demo` and the hint `recovery lab up` prints read the playbooks from the
installed package; a wheel without them would fail at the first step.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import recovery

ROOT = Path(__file__).resolve().parents[2]
BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "recovery", "playbooks")


def test_the_wheel_carries_every_module_and_playbook_and_finds_them_installed(tmp_path: Path) -> None:
    # Built from a copy: setuptools leaves build/ behind, and a stale one could hide a missing file.
    source = tmp_path / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp_path / "dist"), "."],
        check=True, cwd=source, timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("recovery-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packed = set(archive.namelist())
        metadata = archive.read(f"recovery-{recovery.__version__}.dist-info/METADATA").decode()
    # One source for the version: the package's __version__ is what the wheel says it is.
    assert f"\nVersion: {recovery.__version__}\n" in metadata
    assert "Classifier: Typing :: Typed" in metadata
    sources = {path.relative_to(ROOT).as_posix() for path in (ROOT / "recovery").rglob("*.py")}
    playbooks = sorted(path.name for path in (ROOT / "playbooks").glob("*.yaml"))
    assert {"restore-access-serial.yaml", "restore-access-vnc.yaml", "rotate-keypair.yaml"} <= set(playbooks)
    assert sources - packed == set()
    assert {f"recovery/playbooks/{name}" for name in playbooks} - packed == set()

    target = tmp_path / "installed"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target), str(wheel)],
        check=True, timeout=120,
    )
    # Run from elsewhere, so neither the source tree nor its editable install can stand in.
    env = {**os.environ, "PYTHONPATH": str(target)}
    installed = subprocess.run(
        [sys.executable, "-c", "import recovery.cli.main as cli; print(cli.PLAYBOOKS_DIR)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert Path(installed) == target / "recovery" / "playbooks"
    validated = subprocess.run(
        [sys.executable, "-m", "recovery", "validate", *(str(Path(installed) / name) for name in playbooks)],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )
    assert validated.returncode == 0, validated.stderr
