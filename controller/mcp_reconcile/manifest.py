"""Desired state: manifest files -> documents -> schema check -> `${VAR}` expansion -> ServerSpec.

`load_manifests` never raises for bad input: it returns the specs it could build and every problem it
found, in file order, so one broken file or server is reported and isolated while the others proceed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from jsonschema import Draft202012Validator

from mcp_reconcile import generation, graph, safeload
from mcp_reconcile.clientspec import CLIENT_KIND, ClientSpec, build_client_spec, validate_client_document
from mcp_reconcile.errors import ManifestError, McpReconcileError
from mcp_reconcile.model import (
    API_VERSION,
    DEFAULT_HOLD_REQUESTS_S,
    DEFAULT_MAX_SESSIONS,
    DEFAULT_REQUEST_TIMEOUT_S,
    DEFAULT_SESSION_IDLE_S,
    INSTALL_FIELDS,
    KIND,
    RUNTIME_FIELDS,
    BackoffSpec,
    DesiredState,
    HealthSpec,
    Origin,
    RestartPolicy,
    ServerSpec,
    Source,
    TestSpec,
)

# The endpoint settings a manifest may set; only those set count in the runtime generation.
ENDPOINT_OPTIONS = ("holdRequestsSeconds", "requestTimeoutSeconds", "sessions", "maxSessions", "sessionIdleSeconds")

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"   # package data (schemas/ at the top links here)
MANIFEST_SUFFIXES = (".yaml", ".yml")
FOREIGN_SUFFIXES = (".json", ".jsonc")
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}|\$\$")


@dataclass
class LoadResult:
    """What the manifests say. `files` maps each server to the file that declared it; `broken_files`
    are files with a problem that prevents knowing all of their servers (their servers keep their
    last good spec); `blocked` are names declared but unusable (bad spec, missing dependency, cycle)."""

    specs: list[ServerSpec] = field(default_factory=list)
    problems: list[ManifestError] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    broken_files: set[str] = field(default_factory=set)
    blocked: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)
    set_aside: list[ServerSpec] = field(default_factory=list)   # built, but from a file that is ignored
    # every ${VAR} written in any manifest file read, usable or not: no other server inherits them
    referenced_vars: set[str] = field(default_factory=set)
    clients: list[ClientSpec] = field(default_factory=list)   # MCPClient documents (clientspec.py)

    @property
    def by_name(self) -> dict[str, ServerSpec]:
        return {s.name: s for s in self.specs}

    @property
    def problem_files(self) -> set[str]:
        """Every file with a problem of any kind (parse, schema, expansion, duplicate, dependency)."""
        return self.broken_files | {p.file for p in self.problems if p.file}

    def ignoring(self, files: Collection[str]) -> LoadResult:
        """This result with the specs declared in `files` set aside: a file with any problem is ignored as a
        whole (SPEC §5), so a valid document beside a broken one must not apply its edits either."""
        ignored = set(files)
        return replace(self, specs=[s for s in self.specs if s.origin.file not in ignored],
                       set_aside=[*self.set_aside, *(s for s in self.specs if s.origin.file in ignored)],
                       clients=[c for c in self.clients if c.origin.file not in ignored])

    def secret_values(self) -> list[str]:
        """The secrets of every spec built, set-aside ones too: they are redacted all the same."""
        return [v for s in (*self.specs, *self.set_aside) for v in s.secret_values()]


@cache
def load_schema(name: str) -> Draft202012Validator:
    with open(SCHEMA_DIR / name) as fh:
        schema = json.load(fh)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def json_path(parts: Iterable[Any]) -> str:
    """`spec.args[2]` style path from a jsonschema error path."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def discover_files(paths: Sequence[str | Path]) -> tuple[list[Path], list[ManifestError]]:
    """Manifest files under `paths`: files as given, directories searched for *.yaml / *.yml.

    A file reached twice (`-f manifests -f manifests/time.yaml`) is read once, where it is first met."""
    files: dict[Path, Path] = {}   # resolved -> as first given, in first-seen order
    problems: list[ManifestError] = []
    for raw in paths:
        path = Path(raw)
        try:
            found = _files_at(path)
        except (OSError, RuntimeError) as exc:   # too long, a symlink loop, unreadable directory
            problems.append(ManifestError(f"cannot read: {getattr(exc, 'strerror', None) or exc}",
                                          file=safeload.shown_path(path)))
            continue
        if found is None:
            problems.append(ManifestError(safeload.path_problem(path) or "no such file or directory",
                                          file=safeload.shown_path(path)))
            continue
        for p in found:
            files.setdefault(p.resolve(), p)
    return list(files.values()), problems


def _files_at(path: Path) -> list[Path] | None:
    """The manifest files `path` names (itself, or those under a directory); None when it names nothing."""
    if safeload.path_problem(path):
        return None
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in MANIFEST_SUFFIXES and p.is_file()
                      and not p.name.startswith("."))
    return [path] if path.exists() else None


def read_documents(path: Path) -> tuple[list[Any], list[str]]:
    """The documents of one file (YAML stream, or a foreign JSON config converted); warnings beside.

    Read and parsed within the bounds of `safeload`, so a hostile file is one ManifestError naming it."""
    text_path = str(path)
    if path.suffix in FOREIGN_SUFFIXES:
        from mcp_reconcile.formats import load_foreign

        converted = load_foreign(path)
        return list(converted.documents), list(converted.warnings)
    try:
        return safeload.yaml_documents(safeload.read_bounded(path)), []
    except ManifestError as exc:
        raise exc.located(file=text_path) from None


def validate_document(doc: Any) -> list[ManifestError]:
    """Schema problems of one document, located by JSON path only (the caller adds file and index)."""
    if not isinstance(doc, dict):
        return [ManifestError(f"a manifest document must be a mapping, got {type(doc).__name__}")]
    if doc.get("kind") not in (KIND, CLIENT_KIND):
        return [ManifestError(f"unknown kind {doc.get('kind')!r} (expected {KIND} or {CLIENT_KIND})",
                              json_path="kind")]
    if doc.get("apiVersion") != API_VERSION:
        return [ManifestError(f"unknown apiVersion {doc.get('apiVersion')!r} (expected {API_VERSION})",
                              json_path="apiVersion")]
    if doc["kind"] == CLIENT_KIND:
        return validate_client_document(doc)
    errors = sorted(load_schema("mcpserver.schema.json").iter_errors(doc), key=lambda e: list(e.absolute_path))
    return [ManifestError(_schema_reason(e), json_path=json_path(e.absolute_path) or "(document)")
            for e in errors]


_ENV_PATH = ("spec", "env")


def _schema_reason(error: Any) -> str:
    path = list(error.absolute_path)
    if error.validator == "pattern" and path[-2:-1] == ["source"]:
        form = {"npm": "name@version", "pypi": "name==version"}.get(path[-1], "a valid reference")
        return f"{error.instance!r} is not {form}"
    if error.validator in ("maxProperties", "minProperties") and path[-1:] == ["source"]:
        return "exactly one of npm / pypi / path is required"
    if error.validator == "additionalProperties":
        return error.message.replace("Additional properties are not allowed", "unknown field(s)")
    if error.validator == "required" or "propertyNames" in error.schema_path:
        return error.message   # these quote keys, never values
    if tuple(path[:len(_ENV_PATH)]) == _ENV_PATH[:len(path)]:
        return _reason_without_value(error)   # the value is, or may hold, an env value: maybe a secret
    return error.message


def _reason_without_value(error: Any) -> str:
    """jsonschema's reason without quoting the offending value."""
    if error.validator == "type":
        expected = error.validator_value
        expected = [expected] if isinstance(expected, str) else expected
        return "the value is not of type " + ", ".join(repr(t) for t in expected)
    return f"the value fails the {error.validator!r} check"


def expand(value: str, lookup: Mapping[str, str], *, where: str, refs: set[str] | None = None,
           unset_ok: bool = False, parts: set[str] | None = None) -> tuple[str, bool]:
    """Expand `${VAR}` / `${VAR:-default}` (and `$$` -> `$`); True when any reference was expanded.

    The names referenced are added to `refs`, and the values put in for them to `parts` (a secret inside a
    composed value, `Bearer ${TOK}`, is redacted on its own too). An unset variable without a default is an
    error, or "" with `unset_ok`."""
    used = False

    def repl(match: re.Match[str]) -> str:
        nonlocal used
        if match.group(0) == "$$":
            return "$"
        used = True
        name, default = match.group(1), match.group(2)
        if refs is not None:
            refs.add(name)
        if name in lookup:
            if parts is not None:
                parts.add(lookup[name])
            return lookup[name]
        if default is not None:
            return default
        if unset_ok:
            return ""
        raise ManifestError(f"${{{name}}} is not set in the controller's environment or envFile "
                            f"(set it, or give a default: ${{{name}:-value}})", json_path=where)

    return _REF.sub(repl, value), used


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _check_no_nul(values: Iterable[tuple[str, object]]) -> None:
    """Strings that reach exec() or the environment cannot hold a NUL byte: say where one is."""
    for where, value in values:
        if isinstance(value, str) and "\0" in value:
            raise ManifestError("contains a NUL byte", json_path=where)


def build_spec(doc: dict[str, Any], *, origin: Origin, environ: Mapping[str, str], key: bytes,
               unset_vars_ok: bool = False) -> ServerSpec:
    """A ServerSpec from one schema-valid document. Raises ManifestError for expansion problems."""
    base = Path(origin.file).parent if origin.file not in ("<memory>", "-") else Path.cwd()
    meta, spec = doc["metadata"], doc["spec"]
    (kind, ref), = spec["source"].items()
    if kind == "path":
        source_file = safeload.local_path(ref, base, where="spec.source.path")
        safeload.check_source_file(source_file, where="spec.source.path")
        ref = str(source_file)
    command = spec.get("command")
    if isinstance(command, str):
        try:
            command = shlex.split(command)
        except ValueError as exc:
            raise ManifestError(f"cannot split into words: {exc}", json_path="spec.command") from None
    for field_name, values in (("command", command or []), ("args", spec.get("args", []))):
        for i, arg in enumerate(values):
            if isinstance(arg, str) and "${" in arg and _REF.search(arg):
                raise ManifestError("${VAR} is only expanded in spec.env values: pass secrets through env, "
                                    "never on the command line", json_path=f"spec.{field_name}[{i}]")

    env_file_vars: dict[str, str] = {}
    env_file = spec.get("envFile")
    if env_file:
        env_file_path = safeload.local_path(env_file, base, where="spec.envFile")
        env_file_vars = safeload.read_env_file(env_file_path, where="spec.envFile")
    lookup = {**env_file_vars, **environ}
    marked_secret = set(spec.get("secretEnv", []))
    secret_keys = set(env_file_vars) | marked_secret
    env: dict[str, str] = dict(env_file_vars)
    refs: set[str] = set()
    parts: set[str] = set()
    for name, raw in (spec.get("env") or {}).items():
        value, from_ref = expand(_scalar(raw), lookup, where=f"spec.env.{name}", refs=refs, unset_ok=unset_vars_ok,
                                 parts=parts)
        env[name] = value
        if from_ref:
            secret_keys.add(name)
        elif name not in marked_secret:
            secret_keys.discard(name)  # a plain value overrides an envFile entry
    cwd = spec.get("cwd")
    if cwd:
        cwd = str(safeload.local_path(cwd, base, where="spec.cwd"))
    _check_no_nul([*((f"spec.command[{i}]", c) for i, c in enumerate(command or [])),
                   *((f"spec.args[{i}]", a) for i, a in enumerate(spec.get("args", []))),
                   *((f"spec.env.{k}", v) for k, v in env.items())])
    token_env = (spec.get("endpointAuth") or {}).get("tokenEnv")
    if token_env is not None:
        if token_env not in env or not (env[token_env] or unset_vars_ok):
            raise ManifestError(f"names {token_env!r}, which spec.env does not set (add {token_env}: ${{VAR}} to "
                                "spec.env)", json_path="spec.endpointAuth.tokenEnv")
        secret_keys.add(token_env)   # a bearer token is a secret however it was written

    if spec.get("transport", "stdio") != "stdio":
        raise ManifestError("only stdio servers are run for now; every server is served over Streamable HTTP by "
                            "its runner at http://127.0.0.1:PORT/mcp anyway", json_path="spec.transport")
    health = spec.get("health", {})
    backoff = spec.get("restartBackoff", {})
    if backoff.get("maxSeconds", 60.0) < backoff.get("initialSeconds", 1.0):
        raise ManifestError("maxSeconds must be at least initialSeconds", json_path="spec.restartBackoff.maxSeconds")
    fields: dict[str, Any] = {
        "source": f"{kind}:{ref}", "command": command, "args": [_scalar(a) for a in spec.get("args", [])],
        "env": env, "transport": spec.get("transport", "stdio"), "port": spec.get("port"),
        "path": spec.get("path", "/mcp"), "cwd": cwd, "health": health, "restartPolicy":
        spec.get("restartPolicy", "Always"), "restartBackoff": backoff, "dependsOn": spec.get("dependsOn", []),
        "tests": spec.get("tests", {}), "stopTimeoutSeconds": spec.get("stopTimeoutSeconds", 5),
        "endpointAuth": spec.get("endpointAuth"),
    }
    endpoint_options = {k: spec[k] for k in ENDPOINT_OPTIONS if k in spec}
    if endpoint_options:   # absent when unset: existing servers' generations stay as they were
        fields["endpointOptions"] = endpoint_options
    digests = generation.field_digests(fields, key)
    return ServerSpec(
        name=meta["name"], source=Source(kind, ref), command=tuple(command) if command else None,
        args=tuple(fields["args"]), env=MappingProxyType(env), secret_keys=frozenset(secret_keys),
        env_refs=frozenset(refs), secret_parts=frozenset(p for p in parts if p), token_env=token_env,
        transport=fields["transport"], port=fields["port"], path=fields["path"], cwd=cwd,
        desired_state=DesiredState(spec.get("desiredState", "running")),
        restart_policy=RestartPolicy(fields["restartPolicy"]),
        restart_backoff=BackoffSpec(backoff.get("initialSeconds", 1.0), backoff.get("maxSeconds", 60.0),
                                    backoff.get("resetAfterSeconds", 120.0)),
        health=HealthSpec(health.get("intervalSeconds", 30.0), health.get("timeoutSeconds", 5.0),
                          health.get("failureThreshold", 3)),
        stop_timeout_s=float(fields["stopTimeoutSeconds"]), depends_on=tuple(fields["dependsOn"]),
        hold_requests_s=float(spec.get("holdRequestsSeconds", DEFAULT_HOLD_REQUESTS_S)),
        request_timeout_s=float(spec.get("requestTimeoutSeconds", DEFAULT_REQUEST_TIMEOUT_S)),
        sessions=str(spec.get("sessions", "shared")), max_sessions=int(spec.get("maxSessions", DEFAULT_MAX_SESSIONS)),
        session_idle_s=float(spec.get("sessionIdleSeconds", DEFAULT_SESSION_IDLE_S)),
        resources=MappingProxyType({k: MappingProxyType(dict(v)) for k, v in spec.get("resources", {}).items()}),
        labels=MappingProxyType(dict(meta.get("labels", {}))),
        tests=TestSpec(gate=bool(fields["tests"].get("gate", False)), raw=MappingProxyType(fields["tests"])),
        origin=origin, digests=MappingProxyType(digests), generation=generation.combine(digests),
        runtime_generation=generation.combine(digests, RUNTIME_FIELDS),
        install_generation=generation.combine(digests, INSTALL_FIELDS),
    )


def load_manifests(paths: Sequence[str | Path], *, environ: Mapping[str, str] | None = None,
                   key: bytes | None = None, unset_vars_ok: bool = False) -> LoadResult:
    """Every server the manifests under `paths` declare, plus every problem, in file order.

    `unset_vars_ok` expands an unset ${VAR} to "" (read-only commands, whose shell may lack the secrets)."""
    environ = os.environ if environ is None else environ
    key = key if key is not None else os.urandom(32)
    result = LoadResult()
    files, result.problems = discover_files(paths)
    result.broken_files.update(p.file for p in result.problems if p.file)
    seen: dict[str, Origin] = {}
    for path in files:
        result.referenced_vars |= _vars_written_in(path)
        try:
            docs, warnings = read_documents(path)
        except ManifestError as exc:
            # a foreign config reports all of its problems at once, each already located
            result.problems.extend(p.located(file=p.file or str(path)) for p in getattr(exc, "problems", (exc,)))
            result.broken_files.add(str(path))
            continue
        result.warnings.extend(f"{path} {w}" for w in warnings)
        for index, doc in enumerate(docs):
            if doc is None:
                continue
            origin = Origin(str(path), index)
            problems = validate_document(doc)
            name = _name_of(doc)
            if isinstance(doc, dict) and doc.get("kind") == CLIENT_KIND:
                _add_client(result, doc, origin, problems, name)
                continue
            if problems:
                result.problems.extend(p.located(file=str(path), doc_index=index) for p in problems)
                if name:
                    result.blocked.add(name)
                    result.files.setdefault(name, str(path))
                else:
                    result.broken_files.add(str(path))
                continue
            if name in seen:
                result.problems.append(ManifestError(
                    f"duplicate server name {name!r} (first defined in {seen[name]})", file=str(path),
                    doc_index=index, json_path="metadata.name"))
                continue
            seen[name] = origin
            result.files[name] = str(path)
            try:
                result.specs.append(build_spec(doc, origin=origin, environ=environ, key=key,
                                               unset_vars_ok=unset_vars_ok))
            except ManifestError as exc:
                result.problems.append(exc.located(file=str(path), doc_index=index))
                result.blocked.add(name)
    _check_dependencies(result)
    _check_ports(result)
    order = {str(p): i for i, p in enumerate(files)}
    result.problems.sort(key=lambda p: (order.get(p.file or "", -1), p.doc_index or 0))  # stable: file order
    return result


def _add_client(result: LoadResult, doc: dict[str, Any], origin: Origin, problems: list[ManifestError],
                name: str | None) -> None:
    """An MCPClient document: its spec, or its problems (which make its file one to ignore as a whole)."""
    if not problems and any(c.name == name for c in result.clients):
        problems = [ManifestError(f"duplicate MCPClient name {name!r}", json_path="metadata.name")]
    if problems:
        result.problems.extend(p.located(file=origin.file, doc_index=origin.doc_index) for p in problems)
        return
    result.clients.append(build_client_spec(doc, origin=origin))


def _vars_written_in(path: Path) -> set[str]:
    """Every `${VAR}` in the file's text, whatever else is wrong with it: the variables of a blocked server, or
    of a file that does not parse, are withheld from the other servers all the same."""
    try:
        text = safeload.read_bounded(path).decode(errors="replace")
    except (McpReconcileError, OSError):
        return set()
    return {m.group(1) for m in _REF.finditer(text) if m.group(1)}


def _name_of(doc: Any) -> str | None:
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) and name else None


def _check_dependencies(result: LoadResult) -> None:
    """dependsOn must name declared servers and must not loop; offenders are blocked, not dropped silently,
    and so is every server that depends on a blocked one, each with its own problem."""
    declared = {s.name for s in result.specs} | result.blocked
    for spec in result.specs:
        for i, dep in enumerate(spec.depends_on):
            if dep not in declared:
                result.problems.append(ManifestError(
                    f"dependsOn names {dep!r}, which no manifest declares", file=spec.origin.file,
                    doc_index=spec.origin.doc_index, json_path=f"spec.dependsOn[{i}]"))
                result.blocked.add(spec.name)
    by_name = result.by_name
    for cycle in graph.find_cycles({s.name: s.depends_on for s in result.specs}):
        first = by_name[cycle[0]]
        result.problems.append(ManifestError(f"dependsOn cycle: {' -> '.join(cycle)}", file=first.origin.file,
                                             doc_index=first.origin.doc_index, json_path="spec.dependsOn"))
        result.blocked.update(cycle)
    # a server depending on a blocked one cannot start in order either
    at_fault = set(result.blocked)
    changed = True
    while changed:
        changed = False
        for spec in result.specs:
            if spec.name not in result.blocked and any(d in result.blocked for d in spec.depends_on):
                result.blocked.add(spec.name)
                changed = True
    for spec in result.specs:
        if spec.name in result.blocked and spec.name not in at_fault:
            result.problems.extend(ManifestError(
                f"depends on {dep!r}, which has a problem (fix {dep!r} first)", file=spec.origin.file,
                doc_index=spec.origin.doc_index, json_path=f"spec.dependsOn[{i}]")
                for i, dep in enumerate(spec.depends_on) if dep in result.blocked)
    result.specs = [s for s in result.specs if s.name not in result.blocked]


def _check_ports(result: LoadResult) -> None:
    """Two servers cannot serve on one spec.port: the second one named is blocked with the first's place."""
    first: dict[int, ServerSpec] = {}
    for spec in result.specs:
        if spec.port is None:
            continue
        if spec.port in first:
            other = first[spec.port]
            result.problems.append(ManifestError(
                f"port {spec.port} is already the spec.port of {other.name!r} ({other.origin})",
                file=spec.origin.file, doc_index=spec.origin.doc_index, json_path="spec.port"))
            result.blocked.add(spec.name)
        else:
            first[spec.port] = spec
    result.specs = [s for s in result.specs if s.name not in result.blocked]
