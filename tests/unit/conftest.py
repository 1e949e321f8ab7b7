"""Fixtures for the loop's unit tests: `loop`, the FakeClock world of tests/support/loop_world.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from loop_world import Loop


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[Loop]:
    """A Controller over a tmp state dir, recording effects and watchers, and a FakeClock at 1000.0."""
    saved = structlog.get_config()   # (the controller configures structlog; the next test gets it back)
    yield Loop(tmp_path)
    structlog.configure(**saved)
