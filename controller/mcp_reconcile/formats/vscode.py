"""VS Code's `.vscode/mcp.json` (`{"servers": {...}, "inputs": [...]}`, JSONC), or settings.json's
`"mcp": {"servers": ...}`.

Entries convert like `mcpServers` ones. Variables: `${input:id}` (VS Code prompts for it) becomes
`${ID}`, an environment variable and so a secret, with a warning (an input's non-password `default`
becomes `${ID:-default}`); `${env:VAR}` -> `${VAR}`; `${workspaceFolder}` -> the workspace directory
(the parent of `.vscode/`), which is also where relative paths resolve.
"""

from __future__ import annotations

from pathlib import Path

from mcp_reconcile.formats import Conversion, Converted
from mcp_reconcile.formats.mcpservers import Scope, convert_entries, input_var

SCHEMA = "vscode-servers.schema.json"


def detect(data: dict) -> bool:
    return isinstance(data.get("servers"), dict) or _settings_block(data) is not None


def convert(data: dict, *, file: str, base_dir: Path) -> Converted:
    conv = Conversion(file, "vscode")
    root, prefix = (data, ()) if isinstance(data.get("servers"), dict) else (_settings_block(data), ("mcp",))
    conv.check_schema(root, SCHEMA, prefix=prefix)
    workspace = base_dir.parent if base_dir.name == ".vscode" else base_dir
    inputs = {item["id"]: _reference(item) for item in root.get("inputs", [])}
    scope = Scope(workspace, workspace, inputs)
    convert_entries(root["servers"], conv, root=(*prefix, "servers"), scope=scope)
    return conv.result()


def _settings_block(data: dict) -> dict | None:
    block = data.get("mcp")
    return block if isinstance(block, dict) and isinstance(block.get("servers"), dict) else None


def _reference(item: dict) -> str:
    name = input_var(item["id"])
    default = item.get("default")
    if isinstance(default, str) and default and not item.get("password") and "}" not in default:
        return "${" + f"{name}:-{default}" + "}"
    return "${" + name + "}"
