"""Translation between MCP's two protocol eras (SPEC section 7): pure functions over JSON-RPC dicts.

A runner fixes its server's era once (one stdio connection cannot serve both: SPEC appendix), and serves
clients of either era from it:
- handshake-era clients of a stateless (2026-07-28) server get an InitializeResult built from the server's
  `server/discover` answer, and their requests carry the 2026-07-28 `_meta` envelope on the way in;
- 2026-07-28 clients of a handshake-era server get a DiscoverResult built from the server's InitializeResult,
  their envelope is taken off on the way in, and results get the fields 2026-07-28 requires on the way out.

Stdlib only: the runner imports this.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

MODERN_PROTOCOL_VERSION = "2026-07-28"
# Handshake-era protocol revisions, oldest first.
HANDSHAKE_PROTOCOL_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
PROTOCOL_VERSION_KEY = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_KEY = "io.modelcontextprotocol/clientCapabilities"
SERVER_INFO_KEY = "io.modelcontextprotocol/serverInfo"
# Methods whose 2026-07-28 results carry the freshness hints ttlMs / cacheScope.
CACHEABLE_METHODS = frozenset({"prompts/list", "resources/list", "resources/read", "resources/templates/list",
                               "server/discover", "tools/list"})


def modern_version_of(message: dict[str, Any]) -> str | None:
    """The protocol version a 2026-07-28-style request names in `params._meta`, if any."""
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    version = meta.get(PROTOCOL_VERSION_KEY) if isinstance(meta, dict) else None
    return version if isinstance(version, str) else None


def negotiated_version(requested: Any, server_version: str) -> str:
    """The version answered to a handshake client: its own when the server's is the same or newer (servers
    speak the older revisions too), else the server's (never a newer one than the server agreed to)."""
    if requested in HANDSHAKE_PROTOCOL_VERSIONS and server_version in HANDSHAKE_PROTOCOL_VERSIONS \
            and requested <= server_version:
        return str(requested)
    return server_version


def initialize_from_discover(discover: dict[str, Any], requested: Any) -> dict[str, Any]:
    """An InitializeResult for a handshake client of a stateless server, from its DiscoverResult."""
    meta = discover.get("_meta") if isinstance(discover.get("_meta"), dict) else {}
    result: dict[str, Any] = {
        "protocolVersion": requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else HANDSHAKE_PROTOCOL_VERSIONS[-1],
        "capabilities": discover.get("capabilities") or {},
        "serverInfo": meta.get(SERVER_INFO_KEY) or discover.get("serverInfo") or {"name": "unknown", "version": "0"},
    }
    if isinstance(discover.get("instructions"), str):
        result["instructions"] = discover["instructions"]
    return result


def discover_from_initialize(initialize: dict[str, Any]) -> dict[str, Any]:
    """A DiscoverResult for a 2026-07-28 client of a handshake-era server, from its InitializeResult."""
    result: dict[str, Any] = {
        "supportedVersions": [MODERN_PROTOCOL_VERSION],
        "capabilities": initialize.get("capabilities") or {},
        "resultType": "complete", "ttlMs": 0, "cacheScope": "private",
        "_meta": {SERVER_INFO_KEY: initialize.get("serverInfo") or {"name": "unknown", "version": "0"}},
    }
    if isinstance(initialize.get("instructions"), str):
        result["instructions"] = initialize["instructions"]
    return result


def with_envelope(message: dict[str, Any], capabilities: dict[str, Any]) -> dict[str, Any]:
    """A handshake client's request, as a 2026-07-28 server expects it: `_meta` names version and capabilities."""
    params = message.get("params") if isinstance(message.get("params"), dict) else {}
    meta = params.get("_meta") if isinstance(params.get("_meta"), dict) else {}
    meta = {**meta, PROTOCOL_VERSION_KEY: MODERN_PROTOCOL_VERSION, CLIENT_CAPABILITIES_KEY: capabilities}
    return {**message, "params": {**params, "_meta": meta}}


def without_envelope(message: dict[str, Any]) -> dict[str, Any]:
    """A 2026-07-28 client's request, as a handshake-era server expects it (other `_meta` keys are kept)."""
    params = message.get("params")
    if not isinstance(params, dict) or not isinstance(params.get("_meta"), dict):
        return message
    meta = {k: v for k, v in params["_meta"].items() if not k.startswith("io.modelcontextprotocol/")}
    params = {**params, "_meta": meta} if meta else {k: v for k, v in params.items() if k != "_meta"}
    return {**message, "params": params}


def as_modern_result(method: str, response: dict[str, Any]) -> dict[str, Any]:
    """A handshake-era server's response, with the fields a 2026-07-28 client requires of a result."""
    result = response.get("result")
    if not isinstance(result, dict):
        return response
    extra: dict[str, Any] = {"resultType": "complete"}
    if method in CACHEABLE_METHODS:
        extra.update(ttlMs=0, cacheScope="private")
    return {**response, "result": {**extra, **result}}


def client_capabilities_of(message: dict[str, Any]) -> dict[str, Any]:
    """What a client declared it can do: initialize's `capabilities`, or the 2026-07-28 `_meta` entry."""
    params = message.get("params") if isinstance(message.get("params"), dict) else {}
    if message.get("method") == "initialize":
        caps = params.get("capabilities")
    else:
        meta = params.get("_meta") if isinstance(params.get("_meta"), dict) else {}
        caps = meta.get(CLIENT_CAPABILITIES_KEY)
    return caps if isinstance(caps, dict) else {}


# --- the 2026-07-28 HTTP rules ----------------------------------------------------------------------------
INVALID_PARAMS = -32602
METHOD_NOT_FOUND = -32601
HEADER_MISMATCH = -32020
UNSUPPORTED_VERSION = -32022
# Methods 2026-07-28 removed: a modern client asking for one gets 404 and -32601, as from a modern server.
REMOVED_METHODS = frozenset({"initialize", "ping", "logging/setLevel", "resources/subscribe",
                             "resources/unsubscribe"})
# Method -> the params key mirrored in the Mcp-Name header.
NAME_BEARING_METHODS = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


@dataclass(frozen=True)
class Refusal:
    """Why a 2026-07-28 request is refused before it reaches the server: HTTP status and JSON-RPC error."""

    status: int
    code: int
    message: str
    data: Any = None


def _header_value(raw: str | None) -> str | None:
    """A mirrored header's value; `=?base64?...?=` carries values that are not plain visible ASCII."""
    if raw is None or not (raw.startswith("=?base64?") and raw.endswith("?=")):
        return raw
    try:
        return base64.b64decode(raw[len("=?base64?"):-2], validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def modern_refusal(message: dict[str, Any], headers: dict[str, str]) -> Refusal | None:
    """The 2026-07-28 checks a request must pass on HTTP, in the order its servers apply them: the `_meta`
    envelope (400, -32602), the headers that mirror the body (400, -32020), the version (400, -32022), and no
    removed method (404, -32601)."""
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    if not isinstance(meta, dict):
        return Refusal(400, INVALID_PARAMS, "params._meta must be an object carrying "
                       f"{PROTOCOL_VERSION_KEY!r} and {CLIENT_CAPABILITIES_KEY!r}")
    missing = [key for key in (PROTOCOL_VERSION_KEY, CLIENT_CAPABILITIES_KEY) if key not in meta]
    if missing:
        return Refusal(400, INVALID_PARAMS, f"params._meta is missing {', '.join(missing)}")
    version = meta[PROTOCOL_VERSION_KEY]
    if headers.get("mcp-protocol-version") != version:
        return Refusal(400, HEADER_MISMATCH, "MCP-Protocol-Version header does not match _meta's protocol version")
    method = message.get("method")
    if headers.get("mcp-method") != method:
        return Refusal(400, HEADER_MISMATCH, "Mcp-Method header does not match the request's method")
    name_key = NAME_BEARING_METHODS.get(str(method))
    if name_key is not None and isinstance(params, dict) and params.get(name_key) is not None \
            and _header_value(headers.get("mcp-name")) != params[name_key]:
        return Refusal(400, HEADER_MISMATCH, f"Mcp-Name header does not match the request's {name_key!r}")
    if not isinstance(version, str):
        return Refusal(400, INVALID_PARAMS, "the protocol version in _meta must be a string")
    if version != MODERN_PROTOCOL_VERSION:
        return Refusal(400, UNSUPPORTED_VERSION, "Unsupported protocol version",
                       {"supported": [MODERN_PROTOCOL_VERSION], "requested": version})
    if method in REMOVED_METHODS:
        return Refusal(404, METHOD_NOT_FOUND, f"Method not found: {method} was removed in {MODERN_PROTOCOL_VERSION}")
    return None
