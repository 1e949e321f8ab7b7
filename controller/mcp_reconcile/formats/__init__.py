"""Foreign MCP configs -> plain MCPServer manifest documents (dicts shaped like our YAML).

Loaders never build ServerSpecs: `manifest.py` validates, expands `${VAR}` and builds specs from these
documents exactly as it does for YAML, and `mcp-reconcile import` dumps them. So each loader is a
pure data transform: parse (JSONC) -> detect -> check its own schema in `schemas/` -> convert.

Which format a parsed file is (`detect_format`), first match wins:
  mcpservers  a `mcpServers` object (Claude Desktop, Cursor, Claude Code, Windsurf)
  legacy      a `servers` object, no top-level `inputs`, and at least one entry with
              `type: nodejs|python` or a `health_check` (the original installer's servers_config.json)
  vscode      any other `servers` object, or VS Code settings.json's `mcp.servers`
              (VS Code entries have `type: stdio|http|sse` or none)
  registry    an MCP registry server.json: a `name` plus `packages`/`remotes` (or its `$schema`),
              bare or wrapped as the registry API returns it (`{"server": {...}}`)

Secrets: `${VAR}` references are kept as references; nothing here reads the environment.
"""

from __future__ import annotations

import importlib
import json
import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from mcp_reconcile import safeload
from mcp_reconcile.errors import ManifestError
from mcp_reconcile.model import API_VERSION, KIND

FORMATS = ("mcpservers", "legacy", "vscode", "registry")   # detection order, see the docstring
SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"
MANIFEST_SCHEMA = "mcpserver.schema.json"
NAME_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
UNKNOWN_FORMAT = "not a recognised MCP config: expected 'mcpServers', 'servers' or a registry server.json"

# JSON path parts whose values may be secrets: schema messages there never quote the value.
_SENSITIVE_KEYS = frozenset({"env", "headers", "args"})
_SENSITIVE_LEAVES = frozenset({"value", "default", "placeholder"})
# What a source that our schema rejects should have been (clearer than its regex).
_SOURCE_HINTS = {"npm": "is not an npm package name[@version]",
                 "pypi": "is not a PyPI requirement (name, name==version, name>=version)"}
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class Converted:
    documents: list[dict]      # MCPServer manifest docs, in input order
    warnings: list[str]        # human lines "JSON.path: what and why" (skips, guesses); no file name
    format: str                # "legacy" | "mcpservers" | "vscode" | "registry"


class ConversionError(ManifestError):
    """Several problems in one foreign file: the fields are the first one's, `problems` holds all."""

    def __init__(self, problems: list[ManifestError]) -> None:
        self.problems = tuple(problems)
        first = problems[0]
        super().__init__(first.reason, file=first.file, json_path=first.json_path, line=first.line)

    def __str__(self) -> str:
        return "\n".join(ManifestError.__str__(p) for p in self.problems)


def detect_format(data: object) -> str | None:
    """Which foreign format a parsed JSON value is, or None (see the module docstring)."""
    if not isinstance(data, dict):
        return None
    for name in FORMATS:
        if _loader(name).detect(data):
            return name
    return None


def load_foreign(path: str | Path) -> Converted:
    """Read (bounded, see `safeload`), parse (JSON or JSONC), detect, schema-check and convert one foreign
    config file. Every problem is a ManifestError naming the file."""
    from mcp_reconcile.formats import jsonc

    file = safeload.shown_path(path)
    try:
        text = safeload.read_bounded(path).decode("utf-8-sig")
        base_dir = Path(path).resolve().parent
    except ManifestError as exc:
        raise exc.located(file=file) from None
    except UnicodeDecodeError:
        raise ManifestError("cannot read: not UTF-8 text", file=file) from None
    except (OSError, RuntimeError) as exc:
        raise ManifestError(f"cannot resolve its directory: {exc}", file=file) from None
    data = jsonc.loads(text, file=file)
    return convert(data, file=file, base_dir=base_dir)


def convert(data: object, *, file: str, base_dir: Path) -> Converted:
    """Convert an already parsed foreign config; relative paths resolve against `base_dir`."""
    fmt = detect_format(data)
    if fmt is None:
        raise ManifestError(UNKNOWN_FORMAT, file=file)
    return _loader(fmt).convert(data, file=file, base_dir=Path(base_dir))


def _loader(fmt: str) -> Any:
    # Imported on use: the loaders import this module for the shared pieces below.
    return importlib.import_module(f"mcp_reconcile.formats.{fmt}")


# ---- shared by the loaders -------------------------------------------------------------------------

class Conversion:
    """One file's conversion in progress: documents, warnings, problems and the names taken."""

    def __init__(self, file: str, fmt: str) -> None:
        self.file = file
        self.format = fmt
        self.documents: list[dict] = []
        self.warnings: list[str] = []
        self.problems: list[ManifestError] = []
        self._names: dict[str, str] = {}   # server name -> JSON path of the entry that took it

    def warn(self, path: str, message: str) -> None:
        """A warning located by JSON path; the caller knows the file and prefixes it when printing."""
        self.warnings.append(f"{path}: {message}" if path else message)

    def error(self, path: str, reason: str) -> ManifestError:
        return ManifestError(reason, file=self.file, json_path=path or None)

    @contextmanager
    def entry(self, path: str) -> Iterator[None]:
        """Convert one entry: its ManifestError is collected so the other entries still get checked."""
        try:
            yield
        except ManifestError as exc:
            self.problems.append(exc if exc.file else exc.located(file=self.file))

    def check_schema(self, data: object, schema_name: str, *, prefix: tuple[str | int, ...] = ()) -> None:
        """Raise every violation of `schemas/<schema_name>`, in document order, before converting."""
        problems = [self.error(json_path(*prefix, *parts), reason)
                    for parts, reason in schema_problems(data, schema_name)]
        if problems:
            raise _combined(problems)

    def add(self, key: str, path: str, spec: dict, *, name_from: str | None = None) -> None:
        """Name the entry, wrap `spec` into a manifest document and check it against our schema."""
        name = self._take_name(key, path, name_from or key)
        document = manifest_document(name, spec)
        bad = schema_problems(document, MANIFEST_SCHEMA)
        if bad:
            parts, reason = bad[0]
            if parts[:2] == ("spec", "source") and len(parts) == 3 and parts[2] in _SOURCE_HINTS:
                reason = f"{spec['source'][parts[2]]!r} {_SOURCE_HINTS[parts[2]]}"
            raise self.error(path, f"cannot be converted: {json_path(*parts)}: {reason}")
        self.documents.append(document)

    def result(self) -> Converted:
        if self.problems:
            raise _combined(self.problems)
        return Converted(documents=self.documents, warnings=self.warnings, format=self.format)

    def _take_name(self, key: str, path: str, name_from: str) -> str:
        name = slugify(name_from)
        if not name:
            raise self.error(path, f"cannot make a server name from {key!r}: use letters, digits and '-'")
        if name in self._names:
            raise self.error(path, f"server name {name!r} is already taken by {self._names[name]}: "
                                   "rename one of them")
        self._names[name] = path
        if name_from != key:
            self.warn(path, f"server name {name!r} taken from {key!r}")
        elif name != key:
            self.warn(path, f"{key!r} is not a valid server name: using {name!r}")
        return name


def manifest_document(name: str, spec: dict) -> dict:
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec}


def slugify(text: str) -> str:
    """A server name from any key: "My Server" -> "my-server", "" when nothing usable is left."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:63].rstrip("-")


def json_path(*parts: str | int) -> str:
    """`servers.foo.command`, `packages[0].identifier`, `mcpServers["My Server"]`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


def schema_problems(data: object, schema_name: str) -> list[tuple[tuple[str | int, ...], str]]:
    """(path parts, reason) for each violation, in the order the keys appear in `data`."""
    found = []
    for error in _validator(schema_name).iter_errors(data):
        if error.context:
            error = best_match(error.context) or error
        parts = tuple(error.absolute_path)
        found.append((_document_order(data, parts), parts, _reason(error, parts)))
    found.sort(key=lambda item: item[0])
    return [(parts, reason) for _, parts, reason in found]


@cache
def _validator(schema_name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / schema_name).read_text(encoding="utf-8"))
    return Draft202012Validator(schema)


def _reason(error: ValidationError, parts: tuple[str | int, ...]) -> str:
    """jsonschema's message, without quoting the value where it could be a secret."""
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return f"expected {expected}, got {_json_type(error.instance)}"
    if "propertyNames" in error.schema_path:   # the instance is a key, and keys are not secret
        return f"{error.instance!r} is not a valid name here"
    keys = [p for p in parts if isinstance(p, str)]
    if _SENSITIVE_KEYS.isdisjoint(keys) and not (keys and keys[-1] in _SENSITIVE_LEAVES):
        return error.message
    if error.validator == "enum":
        return "must be one of " + ", ".join(repr(v) for v in error.validator_value)
    if error.validator == "pattern":
        return f"does not match {error.validator_value!r}"
    if error.validator in ("required", "additionalProperties", "propertyNames"):
        return error.message
    return f"fails the {error.validator!r} check"


def _json_type(value: object) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
             dict: "object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _document_order(data: object, parts: tuple[str | int, ...]) -> tuple[int, ...]:
    order = []
    for part in parts:
        if isinstance(data, dict) and part in data:
            order.append(list(data).index(part))
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            order.append(part)
            data = data[part]
        else:
            break
    return (*order, -1)   # an object's own problem sorts before its children's


def _combined(problems: list[ManifestError]) -> ManifestError:
    return problems[0] if len(problems) == 1 else ConversionError(problems)
