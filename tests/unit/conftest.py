from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit import fake_steps


@pytest.fixture(autouse=True)
def _fresh_fake_steps() -> Iterator[None]:
    fake_steps.reset()
    yield
