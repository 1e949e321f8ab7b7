"""2026-07-28 multi round-trip requests (MRTR) for handshake-era clients of a 2026-07-28 server.

A 2026-07-28 server does not send requests to its client; it answers a call with `resultType: "input_required"`,
its questions in `inputRequests` ({key: {method, params}}: sampling/createMessage, elicitation/create,
roots/list) and an opaque `requestState`; the client asks, then retries the same request with `inputResponses`
({key: result}) and the `requestState`. A handshake-era client knows only server-to-client requests, so the
gateway asks each question on the call's SSE stream as such a request, collects the client's answers (POSTed
back, as for any server request), retries for it, and hands the client only the final result. A 2026-07-28
client gets `input_required` unchanged. Stdlib only: the runner imports this.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Any

# Rounds of questions one call may take before the client is told the server keeps asking.
MAX_ROUNDS = 8
# The client capability each question needs.
CAPABILITY_OF = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation", "roots/list": "roots"}


@dataclass(frozen=True)
class Questions:
    requests: dict[str, dict[str, Any]]   # key -> {method, params}
    state: Any                            # requestState, echoed verbatim on the retry (None: absent)


def questions_in(response: dict[str, Any]) -> Questions | None:
    """The server's questions when `response` is an input_required result, else None."""
    result = response.get("result")
    if not isinstance(result, dict) or result.get("resultType") != "input_required":
        return None
    requests = result.get("inputRequests")
    requests = {str(k): v for k, v in requests.items() if isinstance(v, dict)} if isinstance(requests, dict) else {}
    return Questions(requests, result.get("requestState"))


def unanswerable(questions: Questions, capabilities: dict[str, Any]) -> str | None:
    """Why the client cannot answer (a question it has no capability for, or one of no known kind)."""
    for key, request in questions.requests.items():
        method = request.get("method")
        capability = CAPABILITY_OF.get(str(method))
        if capability is None:
            return f"the server asks {method!r} (input request {key!r}), which no client request can answer"
        if capability not in capabilities:
            return f"the server asks {method} (input request {key!r}) and this client did not declare {capability}"
    return None


def retry(message: dict[str, Any], answers: dict[str, Any], state: Any) -> dict[str, Any]:
    """The original request again, with the client's answers (and the server's state) attached."""
    params = dict(message.get("params") or {})
    params["inputResponses"] = answers
    if state is not None:
        params["requestState"] = state
    else:
        params.pop("requestState", None)
    return {**message, "params": params}


class Asked:
    """Questions the gateway put to clients as server requests, awaiting each client's answer."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._open: dict[str, tuple[str | None, asyncio.Future[dict[str, Any]]]] = {}

    def ask(self, session_id: str | None, request: dict[str, Any]) -> tuple[dict[str, Any], asyncio.Future[Any]]:
        """The JSON-RPC request to send the client, and the future its answer resolves."""
        request_id = f"mcpr-input-{next(self._ids)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._open[request_id] = (session_id, future)
        message = {"jsonrpc": "2.0", "id": request_id, "method": request.get("method"),
                   "params": request.get("params") or {}}
        return message, future

    def answer(self, message: dict[str, Any], session_id: str | None) -> bool:
        """A client's response to one of our questions; False when it answers none of them."""
        key = message.get("id")
        entry = self._open.get(key) if isinstance(key, str) else None
        if entry is None or entry[0] != session_id:
            return False
        del self._open[key]
        if not entry[1].done():
            entry[1].set_result(message)
        return True

    def forget(self, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            self._open.pop(message["id"], None)
