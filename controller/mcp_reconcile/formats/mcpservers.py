"""`{"mcpServers": {...}}` (Claude Desktop, Cursor, Claude Code, Windsurf), and the entry shape that the
legacy and VS Code formats share with it: a command line becomes `source` + `command` + `args`.

Command lines become sources through the shared launcher parser, `formats.launchers`.
Remote entries (`url`, `type: http|sse`) are skipped with a warning: they are not local processes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mcp_reconcile.errors import ManifestError
from mcp_reconcile.formats import Conversion, Converted, json_path
from mcp_reconcile.formats.launchers import launch_spec, resolve_path, shown

SCHEMA = "mcpservers.schema.json"
REMOTE_TYPES = frozenset({"http", "sse", "streamable-http", "streamableHttp"})
# Keys clients keep per entry that mean nothing to a reconciler; warned about, never an error.
IGNORED_KEYS = frozenset({"autoApprove", "alwaysAllow", "timeout", "description", "dev", "gallery",
                          "version", "name", "transportType"})
_VAR = re.compile(r"\$\{([^}]*)\}")
_OUR_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(:-.*)?$")   # ${VAR} / ${VAR:-default}: ours already


def detect(data: dict) -> bool:
    return isinstance(data.get("mcpServers"), dict)


def convert(data: dict, *, file: str, base_dir: Path) -> Converted:
    conv = Conversion(file, "mcpservers")
    conv.check_schema(data, SCHEMA)
    workspace = base_dir.parent if base_dir.name in (".cursor", ".vscode") else base_dir
    convert_entries(data["mcpServers"], conv, root=("mcpServers",), scope=Scope(workspace, workspace))
    return conv.result()


@dataclass
class Scope:
    """What an entry's strings resolve against: a directory for relative paths, client variables."""

    base_dir: Path
    workspace: Path | None = None                            # ${workspaceFolder}
    inputs: dict[str, str] = field(default_factory=dict)     # VS Code input id -> our ${...} reference


def convert_entries(servers: dict, conv: Conversion, *, root: tuple[str, ...], scope: Scope) -> None:
    """The client-config entries (mcpServers or VS Code servers) of one file, in order."""
    for key, entry in servers.items():
        path = json_path(*root, key)
        with conv.entry(path):
            spec = client_entry_spec(entry, path=path, scope=scope, conv=conv)
            if spec is not None:
                conv.add(key, path, spec)


def client_entry_spec(entry: dict, *, path: str, scope: Scope, conv: Conversion) -> dict | None:
    """One client entry -> a manifest spec, or None when it is skipped (remote, container)."""
    url = entry.get("url") or entry.get("serverUrl")
    if entry.get("type") in REMOTE_TYPES or (url and "command" not in entry):
        conv.warn(path, f"remote {entry.get('type') or 'http'} server{_where(url)} skipped: "
                        "not a local process this tool manages")
        return None
    if "command" not in entry:
        raise conv.error(path, "needs 'command' (a local server) or 'url' (a remote one)")
    tr = _Translator(scope, conv, path)
    cwd = resolve_path(tr(entry["cwd"], "cwd"), scope.base_dir) if entry.get("cwd") else None
    base = Path(cwd) if cwd else scope.base_dir
    args = [tr(a, f"args[{i}]") for i, a in enumerate(entry.get("args", []))]
    spec = launch_spec(tr(entry["command"], "command"), args, path=path, base_dir=base, conv=conv)
    if entry.get("env"):
        spec["env"] = {k: tr(v, f"env.{k}") for k, v in entry["env"].items()}
    if entry.get("envFile"):
        spec["envFile"] = resolve_path(tr(entry["envFile"], "envFile"), scope.base_dir)
    if cwd:
        spec["cwd"] = cwd
    if entry.get("disabled") is True:
        spec["desiredState"] = "stopped"
        conv.warn(path, "disabled in the client: desiredState set to stopped")
    ignored = sorted(k for k in entry if k in IGNORED_KEYS or k == "headers")
    if ignored:
        conv.warn(path, f"ignored (client-only settings): {', '.join(ignored)}")
    return spec


def _where(url: object) -> str:
    """` (scheme://host)` for a warning: user info, path and query may carry a token."""
    shown_url = shown(url) if isinstance(url, str) else ""
    return f" ({shown_url})" if "://" in shown_url else ""


class _Translator:
    """Client variables -> ours: `${env:X}` -> `${X}`, `${input:id}` -> `${ID}`, `${workspaceFolder}`,
    `${userHome}` -> `${HOME}`; our own `${VAR}` / `${VAR:-default}` stay as written."""

    def __init__(self, scope: Scope, conv: Conversion, path: str) -> None:
        self.scope, self.conv, self.path = scope, conv, path

    def __call__(self, value: object, where: str) -> object:
        if not isinstance(value, str) or "${" not in value:
            return value
        return _VAR.sub(lambda m: self._one(m.group(1), where), value)

    def _one(self, inner: str, where: str) -> str:
        prefix, colon, rest = inner.partition(":")
        if _OUR_VAR.match(inner):
            return self._builtin(inner) or "${" + inner + "}"
        if colon and prefix == "env" and rest:
            return "${" + rest + "}"
        if colon and prefix == "input" and rest:
            return self._input(rest, where)
        raise ManifestError(f"client variable ${{{inner}}} cannot be converted: replace it with a value "
                            "or ${VAR}", file=self.conv.file, json_path=f"{self.path}.{where}")

    def _builtin(self, name: str) -> str | None:
        if name == "workspaceFolder" and self.scope.workspace:
            return str(self.scope.workspace)
        if name == "workspaceFolderBasename" and self.scope.workspace:
            return self.scope.workspace.name
        return {"userHome": "${HOME}", "pathSeparator": "/"}.get(name)

    def _input(self, input_id: str, where: str) -> str:
        reference = self.scope.inputs.get(input_id)
        if reference is None:
            reference = "${" + input_var(input_id) + "}"
            self.conv.warn(f"{self.path}.{where}", f"${{input:{input_id}}} is not declared in 'inputs'")
        self.conv.warn(f"{self.path}.{where}",
                       f"${{input:{input_id}}} becomes {reference}, a secret: set {input_var(input_id)} "
                       "in the controller's environment or envFile")
        return reference


def input_var(input_id: str) -> str:
    """The environment variable that stands for a VS Code input: `github-token` -> `GITHUB_TOKEN`."""
    name = re.sub(r"[^A-Za-z0-9]+", "_", input_id).strip("_").upper()
    return name if name and not name[0].isdigit() else f"INPUT_{name}"
