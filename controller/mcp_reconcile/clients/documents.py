"""One client config file as a set of named entries under one container key, in its own format.

Each format keeps what the user wrote: JSON and JSONC by splicing text (`jsonedit`: comments, key order and
indentation stay), TOML through `tomlkit` (comments, ordering and table style stay), YAML through
`ruamel.yaml` round-trip mode (comments, key order, quoting stay). Entries are read back as plain Python
values so they can be compared and fingerprinted whatever the format.
"""

from __future__ import annotations

import io
import json
from typing import Any, Protocol

from mcp_reconcile.clients.jsonedit import JsonText
from mcp_reconcile.errors import ManifestError


def plain(value: Any) -> Any:
    """A format's value (tomlkit item, ruamel CommentedMap) as plain dicts, lists and scalars."""
    return json.loads(json.dumps(value, default=_unwrap))


def _unwrap(value: Any) -> Any:
    if hasattr(value, "unwrap"):
        return value.unwrap()
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    raise TypeError(f"not representable: {type(value).__name__}")


class Document(Protocol):
    file: str

    def entries(self) -> dict[str, Any]: ...
    def set(self, name: str, value: dict[str, Any]) -> None: ...
    def delete(self, name: str) -> bool: ...
    def text(self) -> str: ...


class JsonDocument:
    def __init__(self, text: str, *, file: str, container: str) -> None:
        self.file, self.container = file, container
        self._json = JsonText(text, file=file)
        self.entries()   # a container that is not an object is a clear error now, not a crash later

    def entries(self) -> dict[str, Any]:
        found = self._json.data.get(self.container, {})
        if not isinstance(found, dict):
            raise ManifestError("is not an object", file=self.file, json_path=self.container)
        return found

    def set(self, name: str, value: dict[str, Any]) -> None:
        self._json.set_member((self.container, name), value)

    def delete(self, name: str) -> bool:
        return self._json.delete_member((self.container, name))

    def text(self) -> str:
        return self._json.text


class TomlDocument:
    def __init__(self, text: str, *, file: str, container: str) -> None:
        import tomlkit
        from tomlkit.exceptions import ParseError

        self.file, self.container = file, container
        try:
            self._doc = tomlkit.parse(text)
        except ParseError as exc:
            raise ManifestError(f"not valid TOML: {exc}", file=file, line=getattr(exc, "line", None)) from None
        self.entries()

    def entries(self) -> dict[str, Any]:
        found = self._doc.get(self.container, {})
        if not isinstance(found, dict):
            raise ManifestError("is not a table", file=self.file, json_path=self.container)
        return plain(found)

    def set(self, name: str, value: dict[str, Any]) -> None:
        import tomlkit

        if self.container not in self._doc:
            if self._doc.body and not self._doc.as_string().endswith("\n\n"):
                self._doc.add(tomlkit.nl())
            self._doc.add(self.container, tomlkit.table(is_super_table=True))
        table = tomlkit.table()
        for key, item in value.items():
            table.add(key, item)
        servers = self._doc[self.container]
        if name not in servers:
            table.add(tomlkit.nl())   # a blank line before whatever table follows, as people write them
        servers[name] = table

    def delete(self, name: str) -> bool:
        servers = self._doc.get(self.container)
        if servers is None or name not in servers:
            return False
        del servers[name]
        if not servers:
            del self._doc[self.container]
        return True

    def text(self) -> str:
        return self._doc.as_string()


class YamlDocument:
    def __init__(self, text: str, *, file: str, container: str) -> None:
        from ruamel.yaml import YAML
        from ruamel.yaml.comments import CommentedMap
        from ruamel.yaml.error import YAMLError

        self.file, self.container = file, container
        self._yaml = YAML(typ="rt")
        self._yaml.preserve_quotes = True
        self._yaml.width = 4096   # never fold a long command line the user wrote
        try:
            data = self._yaml.load(text) if text.strip() else None
        except YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise ManifestError(f"not valid YAML: {getattr(exc, 'problem', exc)}", file=file,
                                line=mark.line + 1 if mark else None) from None
        if data is None:
            data = CommentedMap()
        if not isinstance(data, dict):
            raise ManifestError("the top level is not a mapping", file=file)
        self._data = data
        self._original = text
        self._changed = False
        self.entries()

    def entries(self) -> dict[str, Any]:
        found = self._data.get(self.container) or {}
        if not isinstance(found, dict):
            raise ManifestError("is not a mapping", file=self.file, json_path=self.container)
        return plain(found)

    def set(self, name: str, value: dict[str, Any]) -> None:
        from ruamel.yaml.comments import CommentedMap

        if not isinstance(self._data.get(self.container), dict):
            self._data[self.container] = CommentedMap()
        self._data[self.container][name] = CommentedMap(value)
        self._changed = True

    def delete(self, name: str) -> bool:
        servers = self._data.get(self.container)
        if not isinstance(servers, dict) or name not in servers:
            return False
        del servers[name]
        self._changed = True
        return True

    def text(self) -> str:
        if not self._changed:
            return self._original
        out = io.StringIO()
        self._yaml.dump(self._data, out)
        return out.getvalue()


def open_document(fmt: str, text: str, *, file: str, container: str) -> Document:
    """The document for a client's format (`json`, `jsonc`, `toml` or `yaml`)."""
    if fmt in ("json", "jsonc"):
        return JsonDocument(text, file=file, container=container)
    if fmt == "toml":
        return TomlDocument(text, file=file, container=container)
    if fmt == "yaml":
        return YamlDocument(text, file=file, container=container)
    raise ValueError(f"unknown config format {fmt!r}")
