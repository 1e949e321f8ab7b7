"""A client config that is not UTF-8 is a clear error naming the file, never a traceback or a rewrite."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_reconcile.clients import CLIENTS, ClientConfigError, Record, plan_write
from mcp_reconcile.store import StateDir


def test_a_config_that_is_not_utf8_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    config = tmp_path / "mcp.json"
    config.write_bytes(b'{"mcpServers": {"caf\xe9": {"command": "x"}}}')
    with pytest.raises(ClientConfigError, match="not UTF-8"):
        plan_write(CLIENTS["cursor"], "user", config, {}, Record(StateDir(tmp_path / "state")))
    assert config.read_bytes() == b'{"mcpServers": {"caf\xe9": {"command": "x"}}}'
