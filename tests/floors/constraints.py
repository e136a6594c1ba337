"""The dependency floors pyproject.toml declares, as pip constraints: one `name==floor` line each.

`make test-floors` installs every direct dependency at exactly this version, so a floor
that no longer works fails CI instead of a user's install. pyproject.toml stays the only
list: the runtime dependencies and every extra except `test` (pytest and friends are how
we test, not versions we promise; they install unpinned).

    python3 tests/floors/constraints.py            # print the constraints
    python3 tests/floors/constraints.py --check    # exit 1 unless each installed version is its floor

Every requirement must have a `>=` floor: one without is an error, so nothing goes untested.
Runs on the standard library alone (the floors venv has nothing else before pip runs).
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
UNPROMISED_EXTRAS = {"test"}
# name, optional [extras], then the floor; any upper bound or marker after it is left to pip.
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*>=\s*([0-9][^,;\s]*)")


def floors(pyproject: Path = PYPROJECT) -> dict[str, str]:
    """Each promised requirement's name (as written) and its floor."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    requirements = list(project.get("dependencies", []))
    for extra, extra_requirements in project.get("optional-dependencies", {}).items():
        if extra not in UNPROMISED_EXTRAS:
            requirements.extend(extra_requirements)
    found: dict[str, str] = {}
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement)
        if match is None:
            raise SystemExit(f"{pyproject}: {requirement!r} has no `>=` floor; declare the oldest version that works")
        found[match.group(1)] = match.group(2)
    return found


def check(expected: dict[str, str]) -> list[str]:
    """Problems with the installed versions: each must be exactly its floor."""
    problems = []
    for name, floor in expected.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name}: not installed (floor {floor})")
            continue
        if _release(installed) != _release(floor):
            problems.append(f"{name}: {installed} installed, floor is {floor}")
    return problems


def _release(version: str) -> str:
    """`6.0` and `6.0.0` name the same release (`1.2.0.post1` and `1.2.0` do not)."""
    return re.sub(r"(\.0)+$", "", version)


def main(argv: list[str]) -> int:
    expected = floors()
    if argv == ["--check"]:
        problems = check(expected)
        for problem in problems:
            print(f"floor not installed: {problem}", file=sys.stderr)
        if not problems:
            pinned = ", ".join(f"{name}=={floor}" for name, floor in expected.items())
            print(f"{len(expected)} direct dependencies at their floors: {pinned}")
        return 1 if problems else 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    for name, floor in expected.items():
        print(f"{name}=={floor}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
