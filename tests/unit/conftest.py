from __future__ import annotations

import pytest

from tests.unit import fake_steps


@pytest.fixture(autouse=True)
def _fresh_fake_steps() -> None:
    fake_steps.reset()
