"""The `MCPClient` manifest kind: which agent config file should list which servers (SPEC "Connecting agents").

    apiVersion: mcp-reconcile/v1
    kind: MCPClient
    metadata: {name: my-cursor}
    spec:
      client: cursor              # a name from `mcp-reconcile clients list`
      scope: user                 # user (default) | project (the manifest's directory is the project)
      path: ./.cursor/mcp.json    # or an explicit file, relative to the manifest's directory
      servers: [time, memory]     # or selector: {matchLabels: {team: agents}}; neither: every running server

Validated here (schema, a known client, a scope it has); pure apart from reading the schema file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from mcp_reconcile.errors import ManifestError
from mcp_reconcile.model import DesiredState, Origin, ServerSpec

CLIENT_KIND = "MCPClient"


@dataclass(frozen=True)
class ClientSpec:
    """One MCPClient after validation: the client, the config file it resolves to, and the servers wanted."""

    name: str
    client: str
    scope: str
    path: Path | None                          # an explicit file (absolute); None: the client's file for scope
    project_dir: Path                          # what "project" scope means: the manifest's directory
    servers: tuple[str, ...] | None = None     # named servers; None: by selector, or every running one
    match_labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    origin: Origin = field(default_factory=lambda: Origin("<memory>"))


def validate_client_document(doc: dict[str, Any]) -> list[ManifestError]:
    """Schema problems, and a client or scope that does not exist, located by JSON path."""
    from mcp_reconcile.clients.catalog import CLIENTS
    from mcp_reconcile.manifest import json_path, load_schema

    errors = sorted(load_schema("mcpclient.schema.json").iter_errors(doc), key=lambda e: list(e.absolute_path))
    problems = [ManifestError(e.message.replace("Additional properties are not allowed", "unknown field(s)")
                              if e.validator != "not" else "give servers or selector, not both",
                              json_path=json_path(e.absolute_path) or "(document)") for e in errors]
    if problems:
        return problems
    spec = doc["spec"]
    client = CLIENTS.get(spec["client"])
    if client is None:
        return [ManifestError(f"unknown client {spec['client']!r} (known: {', '.join(sorted(CLIENTS))})",
                              json_path="spec.client")]
    scope = spec.get("scope", "user")
    if "path" not in spec and scope not in client.paths:
        return [ManifestError(f"{client.name} has no {scope} scope (it has: {', '.join(client.paths)})",
                              json_path="spec.scope")]
    return []


def build_client_spec(doc: dict[str, Any], *, origin: Origin) -> ClientSpec:
    spec = doc["spec"]
    manifest_dir = Path(origin.file).resolve().parent
    path = Path(spec["path"]).expanduser() if "path" in spec else None
    if path is not None and not path.is_absolute():
        path = manifest_dir / path
    servers = tuple(spec["servers"]) if "servers" in spec else None
    labels = (spec.get("selector") or {}).get("matchLabels") or {}
    return ClientSpec(name=doc["metadata"]["name"], client=spec["client"], scope=spec.get("scope", "user"),
                      path=path, project_dir=manifest_dir, servers=servers,
                      match_labels=MappingProxyType(dict(labels)), origin=origin)


def selected(client: ClientSpec, specs: Sequence[ServerSpec]) -> list[ServerSpec]:
    """The servers the client should list: named ones (whatever their state: the user asked), else those with
    the labels, else every server; of the last two only those whose desiredState is running."""
    if client.servers is not None:
        by_name = {s.name: s for s in specs}
        return [by_name[n] for n in client.servers if n in by_name]
    running = [s for s in specs if s.desired_state == DesiredState.running]
    return [s for s in running if all(s.labels.get(k) == v for k, v in client.match_labels.items())]


def unknown_servers(client: ClientSpec, declared: set[str]) -> list[str]:
    return [n for n in client.servers or () if n not in declared]
