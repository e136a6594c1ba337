"""Every playbook under tests/cases: valid ones load, invalid ones fail with the expected lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from recovery.engine.playbook import load_playbook
from recovery.errors import PlaybookError

CASES = Path(__file__).resolve().parents[1] / "cases"
SHIPPED = Path(__file__).resolve().parents[2] / "playbooks"


@pytest.mark.parametrize("path", sorted([*(CASES / "valid").glob("*.yaml"), *SHIPPED.glob("*.yaml")]), ids=str)
def test_valid_playbook_loads(path: Path) -> None:
    playbook = load_playbook(path)
    assert playbook.steps


@pytest.mark.parametrize("path", sorted((CASES / "invalid").glob("*.yaml")), ids=lambda p: p.name)
def test_invalid_playbook_reports_every_problem(path: Path) -> None:
    expected = [line for line in path.with_suffix(".expected").read_text().splitlines() if line.strip()]
    with pytest.raises(PlaybookError) as caught:
        load_playbook(path)
    problems = [str(p) for p in caught.value.problems]
    for line in expected:
        assert any(problem.startswith(line) for problem in problems), f"{line!r} not in:\n" + "\n".join(problems)
    assert len(problems) == len(expected), "\n".join(problems)
