"""MCP client glue: sessions to a runner's endpoint, health probes in both eras, tool listings.

The official SDK (`mcp.Client`, mode "auto") negotiates the era: it tries `server/discover` and
falls back to `initialize`. A probe is `ping` on a handshake-era server and `server/discover` on a
stateless (2026-07-28) one, where ping no longer exists. Importing this module imports `mcp`
(0.55 s), so only code that talks MCP imports it, lazily (SPEC appendix: import cost).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from pydantic import ValidationError

from mcp_reconcile.errors import ProbeError
from mcp_reconcile.probe import HANDSHAKE, STATELESS

# Connect/write bound of the HTTP client; reads stay long for server-sent event streams (SDK defaults).
HTTP_TIMEOUT_S = 30.0
HTTP_READ_TIMEOUT_S = 300.0
# Extra time a probe caller waits for the probe worker beyond the probe's own timeout.
PROBE_GRACE_S = 1.0
# How long aclose() waits for the worker to close its session before cancelling it.
CLOSE_TIMEOUT_S = 5.0
# A listing longer than this many pages is a server that never ends its cursor chain.
MAX_LIST_PAGES = 100


def describe_error(exc: BaseException, *, timeout_s: float | None = None) -> str:
    """One line saying what came back instead of an answer."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, MCPError):
        return f"JSON-RPC error {exc.code}: {exc.message}"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g} s" if timeout_s is not None else "no answer in time"
    if isinstance(exc, ValidationError):
        first: Any = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return f"an answer that fails the MCP schema at {where or '<root>'}: {first.get('msg', exc)}"
    return f"{type(exc).__name__}: {exc}"


def era_of(client: Client) -> str:
    """'stateless' when the connection adopted a server/discover result, else 'handshake'."""
    return STATELESS if client.session.discover_result is not None else HANDSHAKE


async def cheap_request(client: Client) -> None:
    """The era's cheapest round trip: ping (handshake era) or server/discover (stateless era)."""
    if client.session.discover_result is not None:
        await client.session.send_discover(client.protocol_version)
    else:
        await client.session.send_ping()


@asynccontextmanager
async def _http_transport(endpoint: str, token: str | None, http_errors: list[int] | None) -> AsyncIterator[Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    timeout = httpx2.Timeout(HTTP_TIMEOUT_S, read=HTTP_READ_TIMEOUT_S)
    hooks: dict[str, list[Any]] = {}
    if http_errors is not None:
        async def remember(response: httpx2.Response) -> None:
            if response.status_code >= 400:
                http_errors.append(response.status_code)

        hooks["response"] = [remember]
    async with httpx2.AsyncClient(headers=headers, timeout=timeout, event_hooks=hooks) as http, \
            streamable_http_client(endpoint, http_client=http) as streams:
        yield streams


def endpoint_client(endpoint: str, *, token: str | None = None, mode: str = "auto",
                    http_errors: list[int] | None = None) -> Client:
    """An unentered SDK client for a Streamable HTTP endpoint, with the bearer token if any.

    Response caching is off: a health probe or a test must reach the server every time. The SDK
    turns an HTTP error into a generic JSON-RPC error; `http_errors` collects the real status codes
    (401 says far more about a wrong token than -32603 does).
    """
    return Client(_http_transport(endpoint, token, http_errors), mode=mode, cache=None)


def _with_status(message: str, http_errors: list[int], since: int) -> str:
    codes = http_errors[since:]
    return f"{message} (HTTP {codes[-1]})" if codes else message


async def list_tools_at(endpoint: str, *, token: str | None = None, timeout_s: float = 10) -> list[str]:
    """The names of the tools served at `endpoint`; ProbeError when it cannot say within `timeout_s`."""
    http_errors: list[int] = []
    try:
        with anyio.fail_after(timeout_s):
            async with endpoint_client(endpoint, token=token, http_errors=http_errors) as client:
                names: list[str] = []
                cursor: str | None = None
                for _ in range(MAX_LIST_PAGES):
                    page = await client.list_tools(cursor=cursor)
                    names.extend(tool.name for tool in page.tools)
                    cursor = page.next_cursor
                    if cursor is None:
                        return names
                raise ProbeError(endpoint, f"tools/list did not end after {MAX_LIST_PAGES} pages")
    except ProbeError:
        raise
    except Exception as exc:
        reason = _with_status(describe_error(exc, timeout_s=timeout_s), http_errors, 0)
        raise ProbeError(endpoint, f"tools/list: {reason}") from exc
