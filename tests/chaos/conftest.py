"""Chaos tests share the end-to-end harness: tests/e2e/conftest.py, loaded by path under its own name.

tests/ is not a package, so the harness cannot be imported by module name; like the fault-server tests
load `liveness.py`, this loads the file and re-exports the `local` fixture (a fresh state dir, a private copy
of the fault servers, and a teardown that runs stop-all and requires that no process is left).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

_HARNESS_FILE = Path(__file__).resolve().parents[1] / "e2e" / "conftest.py"
_spec = importlib.util.spec_from_file_location("e2e_harness", _HARNESS_FILE)
assert _spec is not None and _spec.loader is not None
e2e_harness = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = e2e_harness   # dataclasses look their module up while the file executes
_spec.loader.exec_module(e2e_harness)

local = e2e_harness.local

# The full chaos campaign (test_campaign.py) runs only when asked, like the benchmarks (tests/bench/conftest.py).
CAMPAIGN_ENV = "MCPR_CHAOS_CAMPAIGN"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "campaign: the full chaos campaign; run with -m campaign -s")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    expr = config.getoption("markexpr", default="") or ""
    if os.environ.get(CAMPAIGN_ENV) == "1" or ("campaign" in expr and "not campaign" not in expr):
        return
    skip = pytest.mark.skip(reason=f"chaos campaign: run with `-m campaign -s` or {CAMPAIGN_ENV}=1")
    for item in items:
        if item.get_closest_marker("campaign"):
            item.add_marker(skip)
