"""protocol.py without a server: probes never raise, and a closed session stays closed."""

from __future__ import annotations

import socket

import pytest

from mcp_reconcile.errors import ProbeError
from mcp_reconcile.protocol import describe_error, list_tools_at

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def dead_endpoint() -> str:
    """A loopback endpoint nobody listens on (the port was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mcp"


async def test_list_tools_at_an_endpoint_nobody_serves_is_a_probe_error(dead_endpoint: str) -> None:
    with pytest.raises(ProbeError, match="tools/list: ConnectError"):
        await list_tools_at(dead_endpoint, timeout_s=2.0)


def test_describe_error_unwraps_single_exception_groups_and_names_timeouts() -> None:
    from mcp import MCPError

    assert describe_error(ExceptionGroup("g", [MCPError(-32601, "Method not found")])) == (
        "JSON-RPC error -32601: Method not found")
    assert describe_error(TimeoutError(), timeout_s=2) == "no answer within 2 s"
    assert describe_error(RuntimeError("x")) == "RuntimeError: x"
