"""Command lines of foreign configs -> a source to install: the one launcher parser every format uses.

A client config says how to *start* a server (`uv run mcp-server-time`); a manifest says what to
*install* (`source: {pypi: mcp-server-time}`). Taking the launcher's name for the server (`path: uv`)
installs nothing and runs the wrong program, so every common launcher maps to the package or file
it runs:

  npx [-y|--yes] PKG[@ver] ARGS          source.npm: PKG[@ver]
  npx -p|--package PKG BIN ARGS          source.npm: PKG, command: BIN (unless it is PKG's own name)
  uvx PKG[@ver] ARGS  (uv tool run)      source.pypi: PKG[==ver]
  uvx --from REQ CMD ARGS                source.pypi: REQ, command: CMD (unless it is REQ's own name)
  uv run --with REQ CMD ARGS             source.pypi: REQ, command: CMD (unless it is REQ's own name)
  uv run [python] FILE.py ARGS           source.path: FILE (in --directory when given)
  uv run PKG ARGS                        source.pypi: PKG (a uv project's own command is a problem)
  pipx run [--spec REQ] APP ARGS         source.pypi: REQ or APP, command: APP (unless REQ's own name)
  node FILE ARGS, python[3] FILE ARGS    source.path: FILE (command: the interpreter unless the suffix says)
  python[3] -m MODULE ARGS               source.path: MODULE.py beside the config when there, else
                                         source.pypi: MODULE's guessed package, command: python -m MODULE
  FILE.js / FILE.py ARGS                 source.path: FILE
  docker / podman ...                    a problem: containers are not supported
  any other executable                   source.path: it (looked up on PATH), with a warning: a guess
A known launcher used in a form not listed is a problem at its entry, never a `path: uv` guess.
Unpinned packages stay unpinned: the installer pins what it installs. Whether a path source exists is
checked where every manifest is validated (`manifest.build_spec`, and `import`).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from mcp_reconcile.errors import ManifestError
from mcp_reconcile.formats import Conversion

SCRIPT_SUFFIXES = {"node": (".js", ".mjs", ".cjs"), "python": (".py",)}
CONTAINER_RUNTIMES = frozenset({"docker", "podman"})
_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?$|^py$")

# Options that take a value (the next token unless written --opt=value), per launcher.
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
_PIPX_VALUE_OPTS = frozenset({"--spec", "--python", "--pip-args", "--index-url", "-i", "--backend"})
_PIPX_UNDERSTOOD_OPTS = frozenset({"--spec", "-q", "--quiet", "--no-cache"})
_INTERPRETER_VALUE_OPTS = {
    "node": frozenset({"-r", "--require", "--import", "--loader", "--experimental-loader", "--conditions", "-C",
                       "-e", "--eval", "-p", "--print"}),
    "python": frozenset({"-W", "-X", "-c", "-m"}),
}
# Options after which the interpreter takes everything else as the program's own arguments.
_LAST_OPTS = frozenset({"-c", "-m", "-e", "--eval", "-p", "--print"})
_INLINE_CODE_OPTS = frozenset({"-c", "-e", "--eval", "-p", "--print"})


@dataclass(frozen=True)
class Entry:
    """Where a command line comes from: its JSON path, the directory its relative paths resolve against,
    and the conversion that collects warnings."""

    path: str
    base_dir: Path
    conv: Conversion

    def error(self, reason: str) -> ManifestError:
        return self.conv.error(self.path, reason)

    def warn(self, message: str) -> None:
        self.conv.warn(self.path, message)


def launch_spec(command: str, args: list, *, path: str, base_dir: Path, conv: Conversion) -> dict:
    """A command line -> {source, command?, args?} (see the module docstring); ManifestError when none fits.

    `${VAR}` on the command line is kept as written, with a warning: manifests expand variables only
    in spec.env, so the loader will reject that server until the value moves into env.
    """
    entry = Entry(path, base_dir, conv)
    argv = [*split_command(command), *(arg_text(a) for a in args)]
    spec = _launcher(exe_name(argv[0]))(argv, entry)
    if any("${" in str(a) for a in [*spec.get("args", []), *_command_words(spec)]):
        entry.warn("${VAR} on the command line is not expanded (only spec.env values are): "
                   "pass the value through env instead")
    return spec


Launcher = Callable[[list[str], Entry], dict]


def _launcher(exe: str) -> Launcher:
    """The parser for a program name: a launcher's own, the interpreters', or a plain executable's."""
    if exe in _LAUNCHERS:
        return _LAUNCHERS[exe]
    kind = interpreter_kind(exe)
    if kind == "node":
        return _node
    if kind == "python":
        return _python
    return _executable


# ---- one function per launcher ------------------------------------------------------------------------

def _npx(argv: list[str], entry: Entry) -> dict:
    options, positional = _options(argv[1:], _NPX_VALUE_OPTS)
    packages = [v for o, v in options if o in ("-p", "--package") and v]
    if any(o in ("-c", "--call") for o, _ in options):
        raise entry.error("npx --call runs a shell string: cannot convert it, write the manifest by hand")
    _warn_options(options, {"-p", "--package", *_NPX_QUIET_OPTS}, "npx", entry)
    if packages:
        package = _npm_spec(packages[0], entry)
        if len(packages) > 1:
            entry.warn(f"npx installs {len(packages)} packages: only {package!r} is kept")
        command = positional[0] if positional and positional[0] != npm_name(package) else None
        return _launch("npm", package, positional[1:], command=command)
    if not positional:
        raise entry.error("npx without a package")
    return _launch("npm", _npm_spec(positional[0], entry), positional[1:])


def _uvx(argv: list[str], entry: Entry) -> dict:
    """`uvx [opts] PKG ARGS`, `uvx --from REQ CMD ARGS`; also `uv tool run ...`."""
    rest = argv[3:] if exe_name(argv[0]) == "uv" else argv[1:]
    options, positional = _options(rest, _UV_VALUE_OPTS)
    if not positional:
        raise entry.error("uvx without a package")
    _warn_options(options, {"--from", *_UV_QUIET_OPTS}, "uvx", entry)
    from_ = next((v for o, v in options if o == "--from" and v), None)
    if from_ is None:
        return _launch("pypi", _pypi_spec(positional[0], entry), positional[1:])
    return _package_command(_pypi_spec(from_, entry), positional)


def _uv(argv: list[str], entry: Entry) -> dict:
    """`uv tool run` is uvx; `uv [opts] run [opts] ...` is below; any other uv command runs no server."""
    if argv[1:3] == ["tool", "run"]:
        return _uvx(argv, entry)
    if "run" not in argv[1:]:
        raise entry.error(f"'{_shown_line(argv)}' is not 'uv run' or 'uv tool run': cannot convert it, write the "
                          "manifest by hand")
    return _uv_run(argv, entry)


def _uv_run(argv: list[str], entry: Entry) -> dict:
    """`uv [opts] run [opts] CMD ARGS`: a package given by --with, a script, or a PyPI package by name."""
    at = argv.index("run", 1)
    options = _options(argv[1:at], _UV_VALUE_OPTS)[0]
    run_options, positional = _options(argv[at + 1:], _UV_VALUE_OPTS)
    options += run_options
    if not positional:
        raise entry.error("uv run without a command")
    withs = [v for o, v in options if o == "--with" and v]
    directory = next((v for o, v in options if o in ("--directory", "--project") and v), None)
    _warn_options(options, {"--with", "--directory", "--project", *_UV_QUIET_OPTS}, "uv run", entry)
    if withs:
        requirement = _pypi_spec(withs[0], entry)
        if len(withs) > 1:
            entry.warn(f"uv run --with names {len(withs)} packages: only {requirement!r} is kept")
        return _package_command(requirement, positional)
    if interpreter_kind(exe_name(positional[0])) == "python" and len(positional) > 1:
        positional = positional[1:]
    here = Path(resolve_path(directory, entry.base_dir)) if directory else entry.base_dir
    if positional[0].endswith(".py") or _looks_like_path(positional[0]):
        entry.warn("was started with 'uv run': a path source runs the script as is, so its dependencies "
                   "must already be importable")
        return _launch("path", resolve_path(positional[0], here), positional[1:])
    if directory:
        raise entry.error(f"uv run starts {positional[0]!r} from the uv project in {directory!r}: a project is not "
                          "a source this tool installs; point source.path at the server's script")
    return _launch("pypi", _pypi_spec(positional[0], entry), positional[1:])


def _pipx(argv: list[str], entry: Entry) -> dict:
    """`pipx run [--spec REQ] APP ARGS`; any other pipx command runs no server."""
    if argv[1:2] != ["run"]:
        raise entry.error(f"'{_shown_line(argv)}' is not 'pipx run': cannot convert it, write the manifest by hand")
    options, positional = _options(argv[2:], _PIPX_VALUE_OPTS)
    if not positional:
        raise entry.error("pipx run without a package")
    _warn_options(options, _PIPX_UNDERSTOOD_OPTS, "pipx run", entry)
    spec = next((v for o, v in options if o == "--spec" and v), None)
    if spec is None:
        return _launch("pypi", _pypi_spec(positional[0], entry), positional[1:])
    return _package_command(_pypi_spec(spec, entry), positional)


def _node(argv: list[str], entry: Entry) -> dict:
    return _script("node", argv, entry)


def _python(argv: list[str], entry: Entry) -> dict:
    options, positional = _options(argv[1:], _INTERPRETER_VALUE_OPTS["python"], last=_LAST_OPTS)
    module = next((v for o, v in options if o == "-m"), None)
    if module is None:
        return _script("python", argv, entry)
    if not module:
        raise entry.error("python -m without a module")
    return _python_module(argv[0], module, positional, entry)


def _script(kind: str, argv: list[str], entry: Entry) -> dict:
    """`node [opts] FILE ARGS` / `python [opts] FILE ARGS` -> a path source."""
    exe = exe_name(argv[0])
    options, positional = _options(argv[1:], _INTERPRETER_VALUE_OPTS[kind], last=_LAST_OPTS)
    inline = [o for o, _ in options if o in _INLINE_CODE_OPTS]
    if inline:
        raise entry.error(f"{exe} {inline[0]} runs inline code, not a server file: cannot convert it, write the "
                          "manifest by hand")
    if not positional or positional[0] == "-":
        raise entry.error(f"{exe} without a script to run")
    if options:
        entry.warn(f"{exe} options dropped: {' '.join(o for o, _ in options)}")
    script = positional[0]
    command = None if script.endswith(SCRIPT_SUFFIXES[kind]) else argv[0]
    return _launch("path", resolve_path(script, entry.base_dir), positional[1:], command=command)


def _python_module(interpreter: str, module: str, args: list[str], entry: Entry) -> dict:
    """`python -m MODULE`: a module file beside the config, else the PyPI package it is guessed to come from."""
    local = entry.base_dir / (module.replace(".", "/") + ".py")
    if _is_file(local):
        return _launch("path", str(local), args)
    package = re.sub(r"_+", "-", module.split(".", 1)[0]).strip("-").lower()
    if not package:
        raise entry.error(f"python -m {module!r}: not a module name")
    entry.warn(f"'{exe_name(interpreter)} -m {module}' taken for the PyPI package {package!r} (guessed from the "
               "module name): check that it is the package you meant")
    return _launch("pypi", _pypi_spec(package, entry), args, command=["python", "-m", module])


def _container(argv: list[str], entry: Entry) -> dict:
    exe = exe_name(argv[0])
    shown = f"{exe} run" if argv[1:2] == ["run"] else exe
    raise entry.error(f"'{shown}' runs a container: containers are not supported; run the server as a local "
                      "process (npx, uvx, a script) instead")


def _executable(argv: list[str], entry: Entry) -> dict:
    """An arbitrary program or script: a path source (scripts by suffix; others kept with a warning)."""
    exe = argv[0]
    if exe.endswith(SCRIPT_SUFFIXES["node"] + SCRIPT_SUFFIXES["python"]):
        return _launch("path", resolve_path(exe, entry.base_dir), argv[1:])
    # A bare name is looked up on PATH now, so the manifest names the file that actually runs.
    where = resolve_path(exe, entry.base_dir) if "/" in exe or exe.startswith("~") else shutil.which(exe) or exe
    found = "" if os.path.isabs(where) else " (not found on PATH)"
    target = "" if where == exe else f" {where!r}"
    entry.warn(f"'{exe}' is not npx, uvx, uv run, pipx run, node, python or a script: kept as a local path "
               f"source{target}{found}; check that it needs no install step")
    return _launch("path", where, argv[1:])


_LAUNCHERS: dict[str, Launcher] = {"npx": _npx, "uvx": _uvx, "uv": _uv, "pipx": _pipx,
                                   **dict.fromkeys(CONTAINER_RUNTIMES, _container)}


# ---- pieces ----------------------------------------------------------------------------------------

def _launch(kind: str, ref: str, args: list[str], *, command: str | list[str] | None = None) -> dict:
    spec: dict = {"source": {kind: ref}}
    if command:
        spec["command"] = command
    if args:
        spec["args"] = list(args)
    return spec


def _package_command(requirement: str, positional: list[str]) -> dict:
    """A PyPI package plus the command a launcher ran from it (left out when it is the package's own)."""
    command = positional[0] if dist_name(positional[0]) != dist_name(requirement) else None
    return _launch("pypi", requirement, positional[1:], command=command)


def _command_words(spec: dict) -> list[str]:
    command = spec.get("command") or []
    return [command] if isinstance(command, str) else list(command)


def _options(tokens: list[str], value_opts: frozenset[str], *, last: frozenset[str] = frozenset()
             ) -> tuple[list[tuple[str, str | None]], list[str]]:
    """Split leading options (`-x`, `--opt val`, `--opt=val`) from the first positional onwards; an
    option in `last` ends the options (`python -m MOD ARGS`: ARGS belong to MOD)."""
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
        if name in last:
            break
    return options, tokens[i:]


def _warn_options(options: list[tuple[str, str | None]], understood: set[str] | frozenset[str],
                  tool: str, entry: Entry) -> None:
    extra = [o for o, _ in options if o not in understood]   # names only: a value may be a credential
    if extra:
        entry.warn(f"{tool} options ignored: {' '.join(extra)}")


def _npm_spec(spec: str, entry: Entry) -> str:
    if ":" in spec or spec.startswith((".", "/", "~")) or spec.endswith(".tgz"):
        raise entry.error(f"npx runs {shown(spec)!r}, which is not an npm registry package: "
                          "use a path source or write the manifest by hand")
    return spec


def npm_name(spec: str) -> str:
    """`@scope/pkg@1.2` -> `pkg` (what its bin is usually called)."""
    name = spec.rsplit("@", 1)[0] if spec.count("@") > (1 if spec.startswith("@") else 0) else spec
    return name.rsplit("/", 1)[-1]


def _pypi_spec(spec: str, entry: Entry) -> str:
    """uv's `pkg@1.2` -> `pkg==1.2`, `pkg@latest` -> `pkg`; anything that is not a PyPI name fails."""
    spec = spec.strip()
    if "://" in spec or spec.startswith(("git+", ".", "/", "~")):
        raise entry.error(f"{shown(spec)!r} is not a PyPI package: use a path source or write the manifest "
                          "by hand")
    name, at, version = spec.partition("@")
    if at:
        return name if version == "latest" else f"{name}=={version}"
    return spec


def dist_name(requirement: str) -> str:
    """The normalised distribution name of a requirement: `Mcp_Server.Time==1` -> `mcp-server-time`."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    return re.sub(r"[-_.]+", "-", match.group(0)).lower() if match else requirement


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):   # a name too long (or otherwise unusable) is not a module file here
        return False


def _looks_like_path(token: str) -> bool:
    return "/" in token or "\\" in token or token.startswith((".", "~"))


def split_command(command: str) -> list[str]:
    """`"npx -y pkg"` written as one string: split it when it starts with a known launcher."""
    if any(c.isspace() for c in command.strip()):
        try:
            tokens = shlex.split(command)
        except ValueError:
            return [command]
        if tokens and (exe_name(tokens[0]) in _LAUNCHERS or interpreter_kind(exe_name(tokens[0]))):
            return tokens
    return [command]


def exe_name(command: str) -> str:
    """The program's name without directory or Windows suffix: `C:\\nodejs\\npx.cmd` -> `npx`."""
    name = re.split(r"[\\/]", command)[-1].lower()
    for suffix in (".exe", ".cmd", ".bat"):
        name = name.removesuffix(suffix)
    return name


def interpreter_kind(exe: str) -> str | None:
    if exe in ("node", "nodejs"):
        return "node"
    return "python" if _PYTHON.match(exe) else None


def arg_text(value: object) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def resolve_path(value: str, base_dir: Path) -> str:
    """Absolute paths as written; relative ones (and `~`) against `base_dir`."""
    if value.startswith("~"):
        return str(Path(value).expanduser())
    if os.path.isabs(value) or value.startswith("${"):
        return value
    return os.path.normpath(base_dir / value)


def shown(value: str) -> str:
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


def _shown_line(argv: list[str]) -> str:
    """The launcher and its first word (`uv pip`): enough to recognise, never an option's value."""
    return " ".join([exe_name(argv[0]), *argv[1:2]]) if argv[1:2] and not argv[1].startswith("-") else \
        exe_name(argv[0])
