"""The agents mcp-reconcile can connect: where each keeps its MCP servers, in what format, and in what shape.

Every fact below comes from the client's own documentation (looked up 2026-12-03); where a fact is not
documented, the choice says so and falls back to the safe option (a `connect` entry).

- claude-desktop: `claude_desktop_config.json`, `{"mcpServers": {NAME: {"command", "args", "env"}}}`, stdio
  only. macOS `~/Library/Application Support/Claude/`, Windows `%APPDATA%\\Claude\\` (modelcontextprotocol.io
  quickstart; playwright.dev/mcp/clients/claude-desktop). There is no official Linux build; community builds
  read `$XDG_CONFIG_HOME/Claude/` (~/.config/Claude), which is what we use on Linux.
- claude-code: user `~/.claude.json` (top-level `mcpServers`), project `.mcp.json`; `{"type": "http", "url",
  "headers"}`; `${VAR}` / `${VAR:-default}` are expanded in command, args, env, url and headers of `.mcp.json`
  (code.claude.com/docs/en/mcp, "Environment variable expansion in .mcp.json"). Expansion in `~/.claude.json`
  is not documented, so a user-scope server with a token gets a `connect` entry.
- vscode: `mcp.json` in the user profile (`$XDG_CONFIG_HOME/Code/User`, `~/Library/Application Support/Code/
  User`, `%APPDATA%\\Code\\User`) or `.vscode/mcp.json`; JSONC; `{"servers": {NAME: {"type": "http", "url",
  "headers"}}}` (code.visualstudio.com/docs/copilot/reference/mcp-configuration). Headers take `${input:...}`
  prompts; environment expansion in headers is not documented, so a server with a token gets a `connect` entry.
- cursor: `~/.cursor/mcp.json`, project `.cursor/mcp.json`; `{"mcpServers": {NAME: {"url", "headers"}}}`;
  `${env:NAME}` interpolation in command, args, env, url and headers (cursor.com/docs/mcp).
- windsurf: `~/.codeium/windsurf/mcp_config.json` (Windows `%USERPROFILE%\\.codeium\\windsurf`), `mcpServers`
  with `serverUrl` for HTTP servers; `${env:VAR}` interpolation in command, args, env, serverUrl, url and
  headers (docs.windsurf.com/windsurf/cascade/mcp, "Config Interpolation").
- gemini-cli: `~/.gemini/settings.json`, project `.gemini/settings.json`; `mcpServers` with `httpUrl` for
  Streamable HTTP and `headers`; string values may reference `$VAR` or `${VAR}`
  (geminicli.com/docs/tools/mcp-server, geminicli.com/docs/cli/configuration).
- codex: `$CODEX_HOME/config.toml` (default `~/.codex`), project `.codex/config.toml` (trusted projects only);
  `[mcp_servers.NAME]` with `url` and `bearer_token_env_var` (the name of the variable holding the token);
  an inline `bearer_token` is rejected (developers.openai.com/codex/mcp; openai/codex PR 4317).
- goose: `$XDG_CONFIG_HOME/goose/config.yaml` on Linux and macOS, `%APPDATA%\\Block\\goose\\config\\config.yaml`
  on Windows (block.github.io/goose/docs/guides/config-files); `extensions: {NAME: {enabled, type:
  streamable_http, name, description, uri, envs, env_keys, headers, timeout}}` or `type: stdio` with `cmd` and
  `args` (goose's ExtensionConfig). Header expansion is not documented: a server with a token gets `connect`.
- zed: `settings.json` in `$XDG_CONFIG_HOME/zed` (Linux and macOS) or `%APPDATA%\\Zed`, project `.zed/settings.json`;
  JSONC; `{"context_servers": {NAME: {"url", "headers"}}}` or `{"command", "args", "env"}` (zed.dev/docs/ai/mcp).
- cline: the VS Code extension's `globalStorage/saoudrizwan.claude-dev/settings/cline_mcp_settings.json` under
  the Code User dir; `mcpServers` with `{"type": "streamableHttp", "url"}` (docs.cline.bot/mcp/
  connecting-to-a-remote-server).
- lm-studio: `~/.lmstudio/mcp.json` ("follows Cursor's mcp.json notation": `{"mcpServers": {NAME: {"url",
  "headers"}}}`, lmstudio.ai/docs/app/mcp); no expansion documented.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

USER, PROJECT = "user", "project"


@dataclass(frozen=True)
class Where:
    """The machine a path is resolved for: HOME, XDG_CONFIG_HOME, APPDATA, the OS and the project dir."""

    home: Path
    xdg_config: Path
    appdata: Path
    platform: str
    cwd: Path
    environ: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def here(cls, environ: Mapping[str, str] | None = None, *, cwd: Path | None = None,
             platform: str | None = None) -> Where:
        """The current machine, honouring $HOME and $XDG_CONFIG_HOME (tests point them at a tmp dir)."""
        env = os.environ if environ is None else environ
        home = Path(env.get("HOME") or Path.home())
        xdg = env.get("XDG_CONFIG_HOME")
        appdata = env.get("APPDATA")
        return cls(home=home, xdg_config=Path(xdg) if xdg else home / ".config",
                   appdata=Path(appdata) if appdata else home / "AppData" / "Roaming",
                   platform=platform or sys.platform, cwd=(cwd or Path.cwd()).absolute(), environ=dict(env))


@dataclass(frozen=True)
class Target:
    """One server as an entry needs it: its endpoint URL and the variable its bearer token is in, if any."""

    name: str
    url: str
    token_env: str | None = None


@dataclass(frozen=True)
class Connect:
    """How a `connect` entry starts the bridge: the absolute mcp-reconcile executable and state dir."""

    command: str
    state_dir: str

    def args(self, name: str) -> list[str]:
        return ["connect", name, "--state-dir", self.state_dir]


@dataclass(frozen=True)
class Entry:
    """A desired client entry, and a note for the user (e.g. which variable the client expands)."""

    value: dict[str, Any]
    note: str = ""


# the body of a `connect` entry: (command, args) -> entry
ConnectShape = Callable[[str, list[str], str], dict[str, Any]]
# the body of a Streamable HTTP entry: (url, headers) -> entry; None when the client has no such entry
HttpShape = Callable[[str, dict[str, str], str], dict[str, Any]]


@dataclass(frozen=True)
class Client:
    """One agent: file format, the key that holds servers, paths per scope, and how an entry looks."""

    name: str
    title: str
    format: str                                   # json | jsonc | toml | yaml
    container: str                                # the top-level key holding the servers
    paths: Mapping[str, Callable[[Where], Path]]  # scope -> config file
    connect: ConnectShape
    http: HttpShape | None = None
    # "${VAR}"-style template for a header value that the client expands itself, per scope; absent: none
    env_ref: Mapping[str, str] = field(default_factory=dict)
    token_field: str | None = None                # codex: the entry names the variable instead of a header

    def path(self, scope: str, where: Where) -> Path:
        if scope not in self.paths:
            raise KeyError(scope)
        return self.paths[scope](where)


def _by_os(where: Where, *, linux: Path, darwin: Path, win32: Path) -> Path:
    if where.platform == "darwin":
        return darwin
    if where.platform.startswith("win"):
        return win32
    return linux


def _plain_connect(command: str, args: list[str], name: str) -> dict[str, Any]:
    return {"command": command, "args": args}


def _typed_connect(command: str, args: list[str], name: str) -> dict[str, Any]:
    return {"type": "stdio", "command": command, "args": args}


def _typed_http(url: str, headers: dict[str, str], name: str) -> dict[str, Any]:
    return {"type": "http", "url": url, **({"headers": headers} if headers else {})}


def _url_http(key: str) -> HttpShape:
    def shape(url: str, headers: dict[str, str], name: str) -> dict[str, Any]:
        return {key: url, **({"headers": headers} if headers else {})}
    return shape


def _goose_connect(command: str, args: list[str], name: str) -> dict[str, Any]:
    return {"enabled": True, "type": "stdio", "name": name, "description": f"{name} (mcp-reconcile)",
            "cmd": command, "args": args, "envs": {}, "env_keys": [], "timeout": 300}


def _goose_http(url: str, headers: dict[str, str], name: str) -> dict[str, Any]:
    return {"enabled": True, "type": "streamable_http", "name": name, "description": f"{name} (mcp-reconcile)",
            "uri": url, "envs": {}, "env_keys": [], "headers": headers, "timeout": 300}


def _cline_http(url: str, headers: dict[str, str], name: str) -> dict[str, Any]:
    return {"type": "streamableHttp", "url": url, **({"headers": headers} if headers else {})}


def _codex_home(where: Where) -> Path:
    codex_home = where.environ.get("CODEX_HOME")
    return Path(codex_home) if codex_home else where.home / ".codex"


def _code_user_dir(where: Where) -> Path:
    return _by_os(where, linux=where.xdg_config / "Code" / "User",
                  darwin=where.home / "Library" / "Application Support" / "Code" / "User",
                  win32=where.appdata / "Code" / "User")


def _code_user(where: Where) -> Path:
    return _code_user_dir(where) / "mcp.json"


def _cline_settings(where: Where) -> Path:
    return (_code_user_dir(where) / "globalStorage" / "saoudrizwan.claude-dev" / "settings"
            / "cline_mcp_settings.json")


CLIENTS: dict[str, Client] = {c.name: c for c in (
    Client("claude-desktop", "Claude Desktop", "json", "mcpServers",
           {USER: lambda w: _by_os(
               w, linux=w.xdg_config / "Claude" / "claude_desktop_config.json",
               darwin=w.home / "Library" / "Application Support" / "Claude" / "claude_desktop_config.json",
               win32=w.appdata / "Claude" / "claude_desktop_config.json")},
           connect=_plain_connect),
    Client("claude-code", "Claude Code", "json", "mcpServers",
           {USER: lambda w: w.home / ".claude.json", PROJECT: lambda w: w.cwd / ".mcp.json"},
           connect=_typed_connect, http=_typed_http, env_ref={PROJECT: "${%s}"}),
    Client("vscode", "VS Code", "jsonc", "servers",
           {USER: _code_user, PROJECT: lambda w: w.cwd / ".vscode" / "mcp.json"},
           connect=_typed_connect, http=_typed_http),
    Client("cursor", "Cursor", "jsonc", "mcpServers",
           {USER: lambda w: w.home / ".cursor" / "mcp.json", PROJECT: lambda w: w.cwd / ".cursor" / "mcp.json"},
           connect=_plain_connect, http=_url_http("url"), env_ref={USER: "${env:%s}", PROJECT: "${env:%s}"}),
    Client("windsurf", "Windsurf", "jsonc", "mcpServers",
           {USER: lambda w: w.home / ".codeium" / "windsurf" / "mcp_config.json"},
           connect=_plain_connect, http=_url_http("serverUrl"), env_ref={USER: "${env:%s}"}),
    Client("gemini-cli", "Gemini CLI", "jsonc", "mcpServers",
           {USER: lambda w: w.home / ".gemini" / "settings.json",
            PROJECT: lambda w: w.cwd / ".gemini" / "settings.json"},
           connect=_plain_connect, http=_url_http("httpUrl"), env_ref={USER: "${%s}", PROJECT: "${%s}"}),
    Client("codex", "Codex", "toml", "mcp_servers",
           {USER: lambda w: _codex_home(w) / "config.toml", PROJECT: lambda w: w.cwd / ".codex" / "config.toml"},
           connect=_plain_connect, http=_url_http("url"), token_field="bearer_token_env_var"),
    Client("goose", "goose", "yaml", "extensions",
           {USER: lambda w: _by_os(w, linux=w.xdg_config / "goose" / "config.yaml",
                                   darwin=w.xdg_config / "goose" / "config.yaml",
                                   win32=w.appdata / "Block" / "goose" / "config" / "config.yaml")},
           connect=_goose_connect, http=_goose_http),
    Client("zed", "Zed", "jsonc", "context_servers",
           {USER: lambda w: _by_os(w, linux=w.xdg_config / "zed" / "settings.json",
                                   darwin=w.xdg_config / "zed" / "settings.json",
                                   win32=w.appdata / "Zed" / "settings.json"),
            PROJECT: lambda w: w.cwd / ".zed" / "settings.json"},
           connect=_plain_connect, http=_url_http("url")),
    Client("cline", "Cline", "json", "mcpServers", {USER: _cline_settings},
           connect=_plain_connect, http=_cline_http),
    Client("lm-studio", "LM Studio", "json", "mcpServers", {USER: lambda w: w.home / ".lmstudio" / "mcp.json"},
           connect=_plain_connect, http=_url_http("url")),
)}


def entry_for(client: Client, scope: str, target: Target, *, connect: Connect) -> Entry:
    """The entry `client` should have for `target`: its native Streamable HTTP entry when it has one and can
    get the token without us writing it, else a `connect` entry (the bridge reads the token itself)."""
    command, args = connect.command, connect.args(target.name)
    if client.http is None:
        return Entry(client.connect(command, args, target.name), "stdio bridge (no HTTP entry in this client)")
    if target.token_env is None:
        return Entry(client.http(target.url, {}, target.name))
    if client.token_field:
        entry = client.http(target.url, {}, target.name)
        entry[client.token_field] = target.token_env
        return Entry(entry, f"reads the bearer token from ${target.token_env} in its environment")
    template = client.env_ref.get(scope)
    if template:
        headers = {"Authorization": "Bearer " + template % target.token_env}
        return Entry(client.http(target.url, headers, target.name),
                     f"expands {template % target.token_env}: set {target.token_env} in its environment")
    return Entry(client.connect(command, args, target.name), "stdio bridge (it reads the endpoint token itself)")
