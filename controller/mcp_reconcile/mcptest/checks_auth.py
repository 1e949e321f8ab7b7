"""The auth check: an endpoint with a bearer token must refuse requests without it (SPEC section 7)."""

from __future__ import annotations

import time

import anyio
import httpx

from mcp_reconcile.mcptest.model import AUTH, CheckResult, Status
from mcp_reconcile.mcptest.sdk import Session, describe_error, run_session
from mcp_reconcile.protocol import cheap_request, endpoint_client

WRONG_TOKEN = "mcptest-wrong-token"
# A request any MCP endpoint must refuse or accept as a whole: auth comes before parsing.
_PROBE_BODY = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def skipped() -> CheckResult:
    return CheckResult(AUTH, Status.skipped, "no endpoint with a token to test (auth applies to HTTP endpoints "
                       "with a token)")


async def _status_without(endpoint: str, authorization: str | None, timeout_s: float) -> str:
    headers = dict(_HEADERS)
    if authorization is not None:
        headers["Authorization"] = authorization
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as http:
            response = await http.post(endpoint, json=_PROBE_BODY, headers=headers)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    return str(response.status_code)


async def check_auth(endpoint: str, token: str, *, timeout_s: float) -> CheckResult:
    """401 without a token and with a wrong one; a working session with the right one."""
    started = time.monotonic()
    problems = []
    missing = await _status_without(endpoint, None, timeout_s)
    if missing != "401":
        problems.append(f"expected 401 without a token, got {missing}")
    wrong = await _status_without(endpoint, f"Bearer {WRONG_TOKEN}", timeout_s)
    if wrong != "401":
        problems.append(f"expected 401 with a wrong token, got {wrong}")
    answered: list[bool] = []

    async def body(session: Session) -> None:
        with anyio.fail_after(timeout_s):
            await cheap_request(session.client)
        answered.append(True)

    try:
        run = await run_session(endpoint_client(endpoint, token=token), connect_timeout_s=timeout_s, body=body)
        error = run.error
    except Exception as exc:  # the cheap request failed inside the session
        error = describe_error(exc, timeout_s=timeout_s)
    if not answered:
        problems.append(f"expected a working session with the token, got {error}")
    details = {"without_token": missing, "wrong_token": wrong, "with_token": bool(answered)}
    ms = (time.monotonic() - started) * 1000
    if problems:
        return CheckResult(AUTH, Status.failed, "; ".join(problems), ms, details)
    return CheckResult(AUTH, Status.passed, "401 without a token and with a wrong one; the token opens a session",
                       ms, details)
