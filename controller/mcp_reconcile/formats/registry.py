"""An MCP registry `server.json` (registry.modelcontextprotocol.io), bare or wrapped as `{"server": ...}`.

The first npm or pypi package becomes the source (`identifier@version` / `identifier==version`); other
packages and `remotes` are skipped with a warning. The server name is the part after the `/` of
`io.github.user/weather`. Environment variables become references, so none is resolved here:
  isSecret                      NAME: ${NAME}
  not secret, with a default    NAME: ${NAME:-default}
  required, no default          NAME: ${NAME}
  optional, no default          left out (warned: add it to spec.env if you need it)
`packageArguments` become args. `${VAR}` is expanded only in env (never on a command line), so an
argument whose value is not known here (no value or default, or a secret / default-less `{placeholder}`)
is left out with a warning; a `{placeholder}` with a default takes it. In env values `{name}` becomes
`${NAME}`.
"""

from __future__ import annotations

import re
from pathlib import Path

from mcp_reconcile.formats import Conversion, Converted, json_path
from mcp_reconcile.formats.mcpservers import input_var

SCHEMA = "registry-server.schema.json"
INSTALLABLE = ("npm", "pypi")
_URL = re.compile(r"^https?://[^/:]+(?::(?P<port>[^/]+))?(?P<path>/[^?#]*)?")
_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_.-]+)\}")


def detect(data: dict) -> bool:
    return _server(data) is not None


def convert(data: dict, *, file: str, base_dir: Path) -> Converted:
    conv = Conversion(file, "registry")
    server = _server(data) or {}
    prefix: tuple[str, ...] = () if server is data else ("server",)
    conv.check_schema(server, SCHEMA, prefix=prefix)
    name_path = json_path(*prefix, "name")
    for i, remote in enumerate(server.get("remotes", [])):
        conv.warn(json_path(*prefix, "remotes", i), f"remote {remote.get('type', 'http')} endpoint skipped: "
                                                    "not a local process this tool manages")
    chosen = _choose_package(server.get("packages", []), prefix, conv)
    if chosen is None:
        conv.warn(name_path, f"{server['name']!r} has no npm or pypi package: nothing to convert")
        return conv.result()
    index, package = chosen
    with conv.entry(json_path(*prefix, "packages", index)):
        spec = _package_spec(package, json_path(*prefix, "packages", index), conv)
        if spec is not None:
            conv.add(server["name"], name_path, spec, name_from=server["name"].rsplit("/", 1)[-1])
    return conv.result()


def _server(data: dict) -> dict | None:
    inner = data.get("server")
    if isinstance(inner, dict) and "name" in inner:
        return inner
    marked = "server.schema.json" in str(data.get("$schema", ""))
    if isinstance(data.get("name"), str) and (marked or "packages" in data or "remotes" in data):
        return data
    return None


def _choose_package(packages: list[dict], prefix: tuple[str, ...], conv: Conversion) -> tuple[int, dict] | None:
    chosen = next(((i, p) for i, p in enumerate(packages) if p["registryType"] in INSTALLABLE), None)
    for i, package in enumerate(packages):
        if chosen and i == chosen[0]:
            continue
        why = ("only the first npm or pypi package is used" if package["registryType"] in INSTALLABLE
               else "only npm and pypi packages can be installed")
        conv.warn(json_path(*prefix, "packages", i),
                  f"{package['registryType']} package {package['identifier']!r} skipped: {why}")
    return chosen


def _package_spec(package: dict, path: str, conv: Conversion) -> dict | None:
    kind, identifier, version = package["registryType"], package["identifier"], package.get("version")
    if version:
        identifier = f"{identifier}@{version}" if kind == "npm" else f"{identifier}=={version}"
    spec: dict = {"source": {kind: identifier}}
    transport = package.get("transport", {"type": "stdio"})
    if transport["type"] == "sse":
        conv.warn(path, "sse transport skipped: local servers are run over stdio or streamable-http")
        return None
    if transport["type"] == "streamable-http":
        spec.update(_http_endpoint(transport.get("url", ""), f"{path}.transport.url", conv))
    if package.get("runtimeArguments"):
        conv.warn(path, "runtimeArguments ignored: the installer decides how to run the package")
    args = [a for i, arg in enumerate(package.get("packageArguments", []))
            for a in _argument(arg, f"{path}.packageArguments[{i}]", conv)]
    if args:
        spec["args"] = args
    env = _environment(package.get("environmentVariables", []), path, conv)
    if env:
        spec["env"] = env
    return spec


def _http_endpoint(url: str, path: str, conv: Conversion) -> dict:
    spec: dict = {"transport": "streamable-http"}
    match = _URL.match(url)
    port = match.group("port") if match else None
    if port and port.isdigit():
        spec["port"] = int(port)
    else:
        conv.warn(path, "the server's HTTP port is not fixed in server.json: set spec.port")
    if match and match.group("path"):
        spec["path"] = match.group("path")
    return spec


def _argument(arg: dict, path: str, conv: Conversion) -> list[str]:
    label = arg.get("name") or arg.get("valueHint") or "positional argument"
    value = arg.get("value", arg.get("default"))
    if value is not None:
        value = _literal_placeholders(value, arg.get("variables", {}))
    if value is None:
        needed = arg["type"] == "positional" or arg.get("isRequired")
        conv.warn(path, f"{'required' if needed else 'optional'} argument {label} has no value here: "
                        "left out, add it to spec.args" + (" (the server needs it)" if needed else " if needed"))
        return []
    return [arg["name"], value] if arg["type"] == "named" else [value]


def _literal_placeholders(value: str, variables: dict) -> str | None:
    """`{name}` -> the variable's default; None when one has no default or is a secret (args are
    never expanded, so a value that needs the environment cannot go on the command line)."""
    missing = [m.group(1) for m in _PLACEHOLDER.finditer(value)
               if m.group(1) in variables and (variables[m.group(1)].get("isSecret")
                                               or variables[m.group(1)].get("default") is None)]
    if missing:
        return None
    return _PLACEHOLDER.sub(lambda m: variables[m.group(1)]["default"] if m.group(1) in variables
                            else m.group(0), value)


def _environment(variables: list[dict], path: str, conv: Conversion) -> dict[str, str]:
    env: dict[str, str] = {}
    optional = []
    for var in variables:
        name, default = var["name"], var.get("default")
        if "value" in var:
            env[name] = _placeholders(var["value"], var.get("variables", {}))
        elif var.get("isSecret"):
            env[name] = "${" + name + "}"
        elif default is not None and "}" not in default:
            env[name] = "${" + f"{name}:-{default}" + "}"
        elif var.get("isRequired") or default is not None:
            env[name] = "${" + name + "}"
        else:
            optional.append(name)
    secrets = [v["name"] for v in variables if v.get("isSecret") and "value" not in v]
    if secrets:
        conv.warn(path, f"secrets to set in the controller's environment or envFile: {', '.join(secrets)}")
    if optional:
        conv.warn(path, f"optional variables left out (add them to spec.env if needed): {', '.join(optional)}")
    return env


def _placeholders(value: str, variables: dict) -> str:
    """`{token}` declared in `variables` -> `${TOKEN}` (`${TOKEN:-default}`); others stay as written."""
    def one(match: re.Match[str]) -> str:
        variable = variables.get(match.group(1))
        if variable is None:
            return match.group(0)
        name, default = input_var(match.group(1)), variable.get("default")
        if default and not variable.get("isSecret") and "}" not in default:
            return "${" + f"{name}:-{default}" + "}"
        return "${" + name + "}"
    return _PLACEHOLDER.sub(one, value)
