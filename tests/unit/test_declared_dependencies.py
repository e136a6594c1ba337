"""Everything recovery/ imports from outside the standard library is declared, with a floor.

keystoneauth1 was imported for years without being declared: it came with openstacksdk,
so no install noticed, and the floors job could not pin it. This test reads the imports
themselves, so the next one is caught the day it is written.
"""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

from tests.floors.constraints import floors

PACKAGE = Path(__file__).resolve().parents[2] / "recovery"


def _imported_top_level_modules() -> dict[str, Path]:
    """Each absolutely imported top-level module and one file importing it (type-checking imports too)."""
    found: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.partition(".")[0], path)
    return found


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_third_party_import_is_a_declared_dependency_with_a_floor() -> None:
    declared = {_normal(name) for name in floors()}
    distributions = metadata.packages_distributions()
    undeclared = []
    for module, path in _imported_top_level_modules().items():
        if module in sys.stdlib_module_names or module == "recovery":
            continue
        providers = {_normal(dist) for dist in distributions.get(module, [module])}
        if not providers & declared:
            undeclared.append(f"{module} (from {', '.join(sorted(providers))}), imported in {path}")
    assert not undeclared, "imported but not declared in pyproject.toml:\n" + "\n".join(undeclared)


def test_the_scan_sees_the_dependencies_we_know_of() -> None:
    """Guards the test above against a scan that silently finds nothing."""
    assert {"yaml", "paramiko", "keystoneauth1", "openstack", "websocket", "ssh2"} <= set(_imported_top_level_modules())
