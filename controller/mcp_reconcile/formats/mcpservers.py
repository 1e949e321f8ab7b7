"""`{"mcpServers": {...}}` (Claude Desktop, Cursor, Claude Code, Windsurf), and the entry shape that the
legacy and VS Code formats share with it: a command line becomes `source` + `command` + `args`.

Command lines (`launch_spec`):
  npx [-y] PKG[@ver] ARGS...          source.npm: PKG[@ver]          (as written: no version is fine)
  npx -p PKG BIN ARGS...              source.npm: PKG, command: BIN
  uvx [--from REQ] PKG[@ver] ARGS...  source.pypi: PKG[==ver]        (also `uv tool run`; with --from,
                                      source.pypi: REQ and command: PKG when they differ)
  uv run --with REQ CMD ARGS...       source.pypi: REQ, command: CMD
  node X.js / python X.py / X.py      source.path: X                 (resolved against the entry's dir)
  docker / podman ...                 skipped with a warning: a container, not a local process
  anything else                       source.path: the executable, with a warning
Remote entries (`url`, `type: http|sse`) are skipped with a warning: they are not local processes.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from mcp_reconcile.errors import ManifestError
from mcp_reconcile.formats import Conversion, Converted, json_path

SCHEMA = "mcpservers.schema.json"
REMOTE_TYPES = frozenset({"http", "sse", "streamable-http", "streamableHttp"})
# Keys clients keep per entry that mean nothing to a reconciler; warned about, never an error.
IGNORED_KEYS = frozenset({"autoApprove", "alwaysAllow", "timeout", "description", "dev", "gallery",
                          "version", "name", "transportType"})
SCRIPT_SUFFIXES = {"node": (".js", ".mjs", ".cjs"), "python": (".py",)}
_LAUNCHERS = frozenset({"npx", "uvx", "uv", "node", "nodejs", "docker", "podman"})
_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?$|^py$")
_VAR = re.compile(r"\$\{([^}]*)\}")
_OUR_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(:-.*)?$")   # ${VAR} / ${VAR:-default}: ours already

# Options of npx / uv that take a value (the next token unless written --opt=value).
_NPX_VALUE_OPTS = frozenset({"-p", "--package", "-c", "--call", "--registry", "--cache", "--userconfig",
                             "--prefix", "-w", "--workspace"})
_NPX_QUIET_OPTS = frozenset({"-y", "--yes", "-q", "--quiet", "-s", "--silent"})
_UV_VALUE_OPTS = frozenset({"--from", "--with", "--with-editable", "--with-requirements", "--python",
                            "-p", "--index", "--index-url", "--extra-index-url", "--default-index", "-i",
                            "--constraints", "-c", "--overrides", "--directory", "--project",
                            "--config-file", "--cache-dir", "--color", "--python-preference",
                            "--resolution", "--prerelease", "--exclude-newer", "--link-mode",
                            "--env-file", "--package", "--extra", "--group", "--refresh-package",
                            "--reinstall-package", "--upgrade-package", "-P"})
_UV_QUIET_OPTS = frozenset({"-q", "--quiet", "--no-progress", "--native-tls", "--offline"})
_INTERPRETER_VALUE_OPTS = frozenset({"-W", "-X", "-r", "--require", "--import", "--loader",
                                     "--experimental-loader", "--conditions", "-C"})
_INTERPRETER_INLINE_OPTS = frozenset({"-m", "-c", "-e", "--eval", "-p", "--print"})


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
    cwd = _resolve(tr(entry["cwd"], "cwd"), scope.base_dir) if entry.get("cwd") else None
    base = Path(cwd) if cwd else scope.base_dir
    args = [tr(a, f"args[{i}]") for i, a in enumerate(entry.get("args", []))]
    spec = launch_spec(tr(entry["command"], "command"), args, path=path, base_dir=base, conv=conv)
    if spec is None:
        return None
    if entry.get("env"):
        spec["env"] = {k: tr(v, f"env.{k}") for k, v in entry["env"].items()}
    if entry.get("envFile"):
        spec["envFile"] = _resolve(tr(entry["envFile"], "envFile"), scope.base_dir)
    if cwd:
        spec["cwd"] = cwd
    if entry.get("disabled") is True:
        spec["desiredState"] = "stopped"
        conv.warn(path, "disabled in the client: desiredState set to stopped")
    ignored = sorted(k for k in entry if k in IGNORED_KEYS or k == "headers")
    if ignored:
        conv.warn(path, f"ignored (client-only settings): {', '.join(ignored)}")
    return spec


def launch_spec(command: str, args: list, *, path: str, base_dir: Path, conv: Conversion) -> dict | None:
    """A command line -> {source, command?, args?} (see the module docstring); None when skipped.

    `${VAR}` on the command line is kept as written, with a warning: manifests expand variables only
    in spec.env, so the loader will reject that server until the value moves into env.
    """
    spec = _launch_spec(command, args, path=path, base_dir=base_dir, conv=conv)
    if spec and any("${" in str(a) for a in [*spec.get("args", []), spec.get("command") or ""]):
        conv.warn(path, "${VAR} on the command line is not expanded (only spec.env values are): "
                        "pass the value through env instead")
    return spec


def _launch_spec(command: str, args: list, *, path: str, base_dir: Path, conv: Conversion) -> dict | None:
    argv = [*_split_command(command), *(_arg_text(a) for a in args)]
    exe = _exe_name(argv[0])
    if exe in ("docker", "podman"):
        shown = f"{exe} run" if argv[1:2] == ["run"] else exe
        conv.warn(path, f"'{shown}' runs a container, not a local process this tool manages: skipped")
        return None
    if exe == "npx":
        return _npx(argv[1:], path=path, conv=conv)
    if exe == "uvx" or (exe == "uv" and argv[1:3] == ["tool", "run"]):
        return _uvx(argv[1 if exe == "uvx" else 3:], path=path, conv=conv)
    if exe == "uv" and "run" in argv[1:]:
        return _uv_run(argv, path=path, base_dir=base_dir, conv=conv)
    kind = _interpreter_kind(exe)
    if kind:
        spec = _interpreter(kind, argv, path=path, base_dir=base_dir, conv=conv)
        if spec is not None:
            return spec
    elif argv[0].endswith(SCRIPT_SUFFIXES["node"] + SCRIPT_SUFFIXES["python"]):
        return _launch("path", _resolve(argv[0], base_dir), argv[1:])
    why = "runs no .js or .py script" if kind else "is not npx, uvx, uv run, node, python or a script"
    return _unknown(argv, why, path=path, base_dir=base_dir, conv=conv)


# ---- command lines ---------------------------------------------------------------------------------

def _npx(rest: list[str], *, path: str, conv: Conversion) -> dict:
    options, positional = _options(rest, _NPX_VALUE_OPTS)
    packages = [v for o, v in options if o in ("-p", "--package") and v]
    if any(o in ("-c", "--call") for o, _ in options):
        raise conv.error(path, "npx --call runs a shell string: cannot convert it, write the manifest by hand")
    _warn_options(options, {"-p", "--package", *_NPX_QUIET_OPTS}, "npx", path, conv)
    if packages:
        package = _npm_spec(packages[0], path, conv)
        if len(packages) > 1:
            conv.warn(path, f"npx installs {len(packages)} packages: only {package!r} is kept")
        command = positional[0] if positional and positional[0] != _npm_name(package) else None
        return _launch("npm", package, positional[1:], command=command)
    if not positional:
        raise conv.error(path, "npx without a package")
    return _launch("npm", _npm_spec(positional[0], path, conv), positional[1:])


def _uvx(rest: list[str], *, path: str, conv: Conversion) -> dict:
    options, positional = _options(rest, _UV_VALUE_OPTS)
    if not positional:
        raise conv.error(path, "uvx without a package")
    _warn_options(options, {"--from", *_UV_QUIET_OPTS}, "uvx", path, conv)
    from_ = next((v for o, v in options if o == "--from" and v), None)
    if from_ is None:
        return _launch("pypi", _pypi_spec(positional[0], path, conv), positional[1:])
    requirement = _pypi_spec(from_, path, conv)
    command = positional[0] if _dist_name(positional[0]) != _dist_name(requirement) else None
    return _launch("pypi", requirement, positional[1:], command=command)


def _uv_run(argv: list[str], *, path: str, base_dir: Path, conv: Conversion) -> dict:
    """`uv [opts] run [opts] CMD ARGS`: a package given by --with, or a script in a directory."""
    before, after = argv[1:argv.index("run", 1)], argv[argv.index("run", 1) + 1:]
    options, _ = _options(before, _UV_VALUE_OPTS)
    run_options, positional = _options(after, _UV_VALUE_OPTS)
    options += run_options
    if not positional:
        raise conv.error(path, "uv run without a command")
    withs = [v for o, v in options if o == "--with" and v]
    directory = next((v for o, v in options if o in ("--directory", "--project") and v), None)
    here = Path(_resolve(directory, base_dir)) if directory else base_dir
    _warn_options(options, {"--with", "--directory", "--project", *_UV_QUIET_OPTS}, "uv run", path, conv)
    if withs:
        requirement = _pypi_spec(withs[0], path, conv)
        if len(withs) > 1:
            conv.warn(path, f"uv run --with names {len(withs)} packages: only {requirement!r} is kept")
        command = positional[0] if _dist_name(positional[0]) != _dist_name(requirement) else None
        return _launch("pypi", requirement, positional[1:], command=command)
    if _interpreter_kind(_exe_name(positional[0])) == "python":
        positional = positional[1:] if len(positional) > 1 else positional
    if positional[0].endswith(".py"):
        conv.warn(path, "was started with 'uv run': a path source runs the script as is, so its "
                        "dependencies must already be importable")
        return _launch("path", _resolve(positional[0], here), positional[1:])
    return _unknown(argv, "runs neither a --with package nor a .py script", path=path, base_dir=base_dir,
                    conv=conv)


def _interpreter(kind: str, argv: list[str], *, path: str, base_dir: Path, conv: Conversion) -> dict | None:
    """`node [opts] X.js ARGS` / `python [opts] X.py ARGS` -> a path source; None if not a script."""
    options, positional = _options(argv[1:], _INTERPRETER_VALUE_OPTS)
    if any(o in _INTERPRETER_INLINE_OPTS for o, _ in options) or not positional:
        return None
    if not positional[0].endswith(SCRIPT_SUFFIXES[kind]):
        return None
    if options:
        dropped = " ".join(o for o, _ in options)
        conv.warn(path, f"{_exe_name(argv[0])} options dropped: {dropped}")
    return _launch("path", _resolve(positional[0], base_dir), positional[1:])


def _unknown(argv: list[str], why: str, *, path: str, base_dir: Path, conv: Conversion) -> dict:
    """An arbitrary executable: kept as a path source, with a warning that it is a guess."""
    exe = argv[0]
    # A bare name is looked up on PATH now, so the manifest names the file that actually runs.
    where = _resolve(exe, base_dir) if "/" in exe or exe.startswith("~") else shutil.which(exe) or exe
    found = "" if os.path.isabs(where) else " (not found on PATH)"
    target = "" if where == exe else f" {where!r}"
    conv.warn(path, f"'{exe}' {why}: kept as a local path source{target}{found}; "
                    "check that it needs no install step")
    return _launch("path", where, argv[1:])


# ---- pieces ----------------------------------------------------------------------------------------

def _launch(kind: str, ref: str, args: list[str], *, command: str | None = None) -> dict:
    spec: dict = {"source": {kind: ref}}
    if command:
        spec["command"] = command
    if args:
        spec["args"] = list(args)
    return spec


def _options(tokens: list[str], value_opts: frozenset[str]) -> tuple[list[tuple[str, str | None]], list[str]]:
    """Split leading options (`-x`, `--opt val`, `--opt=val`) from the first positional onwards."""
    options: list[tuple[str, str | None]] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "--":
            return options, tokens[i + 1:]
        if not token.startswith("-") or token == "-":
            break
        name, eq, value = token.partition("=")
        if eq:
            options.append((name, value))
        elif token in value_opts:
            options.append((token, tokens[i + 1] if i + 1 < len(tokens) else None))
            i += 1
        else:
            options.append((token, None))
        i += 1
    return options, tokens[i:]


def _warn_options(options: list[tuple[str, str | None]], understood: set[str] | frozenset[str],
                  tool: str, path: str, conv: Conversion) -> None:
    extra = [o for o, _ in options if o not in understood]   # names only: a value may be a credential
    if extra:
        conv.warn(path, f"{tool} options ignored: {' '.join(extra)}")


def _npm_spec(spec: str, path: str, conv: Conversion) -> str:
    if ":" in spec or spec.startswith((".", "/", "~")) or spec.endswith(".tgz"):
        raise conv.error(path, f"npx runs {_shown(spec)!r}, which is not an npm registry package: "
                               "use a path source or write the manifest by hand")
    return spec


def _npm_name(spec: str) -> str:
    """`@scope/pkg@1.2` -> `pkg` (what its bin is usually called)."""
    name = spec.rsplit("@", 1)[0] if spec.count("@") > (1 if spec.startswith("@") else 0) else spec
    return name.rsplit("/", 1)[-1]


def _pypi_spec(spec: str, path: str, conv: Conversion) -> str:
    """uv's `pkg@1.2` -> `pkg==1.2`, `pkg@latest` -> `pkg`; anything that is not a PyPI name fails."""
    spec = spec.strip()
    if "://" in spec or spec.startswith(("git+", ".", "/", "~")):
        raise conv.error(path, f"{_shown(spec)!r} is not a PyPI package: use a path source or write the manifest "
                               "by hand")
    name, at, version = spec.partition("@")
    if at:
        return name if version == "latest" else f"{name}=={version}"
    return spec


def _dist_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    return re.sub(r"[-_.]+", "-", match.group(0)).lower() if match else requirement


def _split_command(command: str) -> list[str]:
    """`"npx -y pkg"` written as one string: split it when it starts with a known launcher."""
    if any(c.isspace() for c in command.strip()):
        try:
            tokens = shlex.split(command)
        except ValueError:
            return [command]
        if tokens and (_exe_name(tokens[0]) in _LAUNCHERS or _interpreter_kind(_exe_name(tokens[0]))):
            return tokens
    return [command]


def _exe_name(command: str) -> str:
    name = re.split(r"[\\/]", command)[-1].lower()
    for suffix in (".exe", ".cmd", ".bat"):
        name = name.removesuffix(suffix)
    return name


def _interpreter_kind(exe: str) -> str | None:
    if exe in ("node", "nodejs"):
        return "node"
    return "python" if _PYTHON.match(exe) else None


def _arg_text(value: object) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _resolve(value: str, base_dir: Path) -> str:
    """Absolute paths as written; relative ones (and `~`) against `base_dir`."""
    if value.startswith("~"):
        return str(Path(value).expanduser())
    if os.path.isabs(value) or value.startswith("${"):
        return value
    return os.path.normpath(base_dir / value)


def _where(url: object) -> str:
    """` (scheme://host)` for a warning: user info, path and query may carry a token."""
    shown = _shown(url) if isinstance(url, str) else ""
    return f" ({shown})" if "://" in shown else ""


def _shown(value: str) -> str:
    """A value fit for a message: a URL is cut down to scheme and host."""
    if "://" not in value:
        return value
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<url>"
    return f"{parts.scheme}://{host}{port}"


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
