"""MCP client glue: sessions to a runner's endpoint, health probes in both eras, tool listings.

The official SDK (`mcp.Client`, mode "auto") negotiates the era: it tries `server/discover` and
falls back to `initialize`. A probe is `ping` on a handshake-era server and `server/discover` on a
stateless (2026-07-28) one, where ping no longer exists. Importing this module imports `mcp`
(0.55 s), so only code that talks MCP imports it, lazily (SPEC appendix: import cost).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from pydantic import ValidationError

from mcp_reconcile.errors import ProbeError
from mcp_reconcile.probe import HANDSHAKE, STATELESS, ProbeResult

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


_Request = tuple[float, "asyncio.Future[ProbeResult]"]


class ProbeSession:
    """One MCP session per server, kept open between probes (SPEC appendix: probe budget).

    A worker task owns the SDK client, because the SDK's task groups must be entered and left by
    one task; `probe()` hands it requests through a queue. After a failed probe the worker drops
    the session and the next probe connects afresh, so a restarted runner is picked up.
    """

    def __init__(self, endpoint: str, *, token: str | None = None) -> None:
        self.endpoint = endpoint
        self._token = token
        self._requests: asyncio.Queue[_Request | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._current: asyncio.Future[ProbeResult] | None = None
        self._http_errors: list[int] = []
        self._closed = False
        self.era: str | None = None
        self.protocol_version: str | None = None

    def _result(self, ok: bool, latency_ms: float | None = None, error: str | None = None) -> ProbeResult:
        return ProbeResult(ok, latency_ms, self.era, self.protocol_version, error)

    async def probe(self, timeout_s: float) -> ProbeResult:
        """Ping (handshake era) or server/discover (stateless era) within `timeout_s`; never raises.

        The first probe, and the first after a failure, includes connecting in its `timeout_s`.
        """
        if self._closed:
            return self._result(False, error="probe session is closed")
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._serve(), name=f"probe {self.endpoint}")
        future: asyncio.Future[ProbeResult] = asyncio.get_running_loop().create_future()
        self._requests.put_nowait((timeout_s, future))
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s + PROBE_GRACE_S)
        except TimeoutError:
            return self._result(False, error=f"no answer within {timeout_s:g} s")
        except Exception as exc:  # the worker broke: report it as a failed probe
            return self._result(False, error=describe_error(exc))
        finally:
            future.cancel()  # a no-op when answered; otherwise the worker skips it

    async def aclose(self) -> None:
        """Close the session (bounded); later probes fail without connecting."""
        self._closed = True
        worker, self._worker = self._worker, None
        if worker is None or worker.done():
            return
        self._requests.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(worker), CLOSE_TIMEOUT_S)
        except (TimeoutError, Exception):
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker

    def _settle(self, result: ProbeResult) -> None:
        future, self._current = self._current, None
        if future is not None and not future.done():
            future.set_result(result)

    async def _next_request(self) -> _Request | None:
        """The next probe whose caller still waits, or None when close was asked."""
        while (request := await self._requests.get()) is not None:
            if not request[1].done():
                return request
        return None

    async def _serve(self) -> None:
        while (request := await self._next_request()) is not None:
            if not await self._session(request):
                return

    async def _session(self, first: _Request) -> bool:
        """Connect, then answer probes until one fails (True: go on) or close is asked (False)."""
        timeout_s, self._current = first
        deadline = anyio.current_time() + timeout_s
        go_on = True
        self._http_errors.clear()
        try:
            with anyio.CancelScope(deadline=deadline) as scope:
                async with endpoint_client(self.endpoint, token=self._token, http_errors=self._http_errors) as client:
                    scope.deadline = math.inf
                    self.era, self.protocol_version = era_of(client), client.protocol_version
                    while True:
                        result = await self._probe_once(client, deadline, timeout_s)
                        self._settle(result)
                        if not result.ok:
                            break
                        request = await self._next_request()
                        if request is None:
                            go_on = False
                            break
                        timeout_s, self._current = request
                        deadline = anyio.current_time() + timeout_s
                    scope.deadline = anyio.current_time() + CLOSE_TIMEOUT_S  # bound the session's close
            if scope.cancelled_caught:
                self._settle(self._result(False, error=f"no session within {timeout_s:g} s"))
        except Exception as exc:
            error = _with_status(describe_error(exc, timeout_s=timeout_s), self._http_errors, 0)
            self._settle(self._result(False, error=error))
        return go_on

    async def _probe_once(self, client: Client, deadline: float, timeout_s: float) -> ProbeResult:
        started = time.monotonic()
        errors_before = len(self._http_errors)
        try:
            with anyio.fail_after(max(0.0, deadline - anyio.current_time())):
                await cheap_request(client)
        except Exception as exc:
            error = _with_status(describe_error(exc, timeout_s=timeout_s), self._http_errors, errors_before)
            return self._result(False, error=error)
        return self._result(True, latency_ms=(time.monotonic() - started) * 1000)
