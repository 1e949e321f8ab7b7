"""The legacy `servers_config.json` of the installer script this project grew from (SPEC section 11).

    {"servers": {NAME: {"type": "nodejs|python", "command", "args", "env",
                        "health_check": {"endpoint", "port", "interval", "timeout"}}}}

Commands map as in `launchers.launch_spec`; relative script paths resolve against the config file's
directory. Env values (`${VAR}` included) are kept verbatim. `health_check.interval/timeout` become
`spec.health`; `endpoint`/`port` were HTTP GET probes, which we replaced by MCP probes, so they are
ignored with a warning.
"""

from __future__ import annotations

from pathlib import Path

from mcp_reconcile.formats import Conversion, Converted, json_path
from mcp_reconcile.formats.launchers import launch_spec

SCHEMA = "legacy-servers-config.schema.json"
LEGACY_TYPES = frozenset({"nodejs", "python"})
_SOURCE_OF_TYPE = {"nodejs": "npm", "python": "pypi"}


def detect(data: dict) -> bool:
    """A `servers` object with a legacy-only mark (see the package docstring for the whole rule)."""
    servers = data.get("servers")
    if not isinstance(servers, dict) or "inputs" in data:
        return False
    return any(isinstance(e, dict) and (_is_legacy_type(e.get("type")) or "health_check" in e)
               for e in servers.values())


def _is_legacy_type(kind: object) -> bool:
    """Detection runs before any schema check, so `type` may be anything (a list is unhashable)."""
    return isinstance(kind, str) and kind in LEGACY_TYPES


def convert(data: dict, *, file: str, base_dir: Path) -> Converted:
    conv = Conversion(file, "legacy")
    conv.check_schema(data, SCHEMA)
    for key, entry in data["servers"].items():
        path = json_path("servers", key)
        with conv.entry(path):
            spec = _entry_spec(entry, path=path, base_dir=base_dir, conv=conv)
            if spec is not None:
                conv.add(key, path, spec)
    extra = sorted(k for k in data if k != "servers")
    if extra:
        conv.warn("", f"top-level keys ignored: {', '.join(extra)}")
    return conv.result()


def _entry_spec(entry: dict, *, path: str, base_dir: Path, conv: Conversion) -> dict | None:
    spec = launch_spec(entry["command"], entry.get("args", []), path=path, base_dir=base_dir, conv=conv)
    _check_type(entry.get("type"), spec, path, conv)
    if entry.get("env"):
        spec["env"] = dict(entry["env"])
    health = _health(entry.get("health_check"), f"{path}.health_check", conv)
    if health:
        spec["health"] = health
    return spec


def _health(check: dict | None, path: str, conv: Conversion) -> dict:
    if not check:
        return {}
    probes = [k for k in ("endpoint", "port") if k in check]
    if probes:
        conv.warn(path, f"{' and '.join(probes)} ignored: health is now probed over MCP "
                        "(ping or server/discover), not by HTTP GET")
    health = {}
    if "interval" in check:
        health["intervalSeconds"] = check["interval"]
    if "timeout" in check:
        health["timeoutSeconds"] = check["timeout"]
    return health


def _check_type(kind: str | None, spec: dict, path: str, conv: Conversion) -> None:
    """`type` only documented the runtime; say so when the command line disagrees with it."""
    expected = _SOURCE_OF_TYPE.get(kind or "")
    actual = next(iter(spec["source"]))
    if expected and actual != "path" and actual != expected:
        conv.warn(path, f"type {kind!r} but the command runs a {actual} package: using {actual}")
