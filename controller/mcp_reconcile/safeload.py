"""Untrusted files, read and parsed within fixed bounds: manifests, foreign configs and envFiles.

Manifests come from whoever can write to the manifest directory, so a hostile file must cost a
listed problem, never a traceback, a hang or gigabytes. Every limit below is checked before the work
it bounds, and every failure is a ManifestError (the caller adds the file and where it was named):

  read_bounded      regular files only (and /dev/null), at most MAX_FILE_BYTES; paths without NUL
                    and at most MAX_PATH_BYTES (a FIFO would block, /proc/self/mem fails, /dev/zero
                    never ends)
  yaml_documents    PyYAML's SafeLoader narrowed to the core schema (str, int, float, bool, null,
                    seq, map), with MAX_DEPTH nesting and MAX_NODES nodes counted after alias
                    expansion (a 600-byte alias bomb expands to hundreds of millions of nodes)
  check_size        nesting and node count of an already parsed JSON value (json's RecursionError
                    is caught by the JSON reader)
  local_path, read_env_file, check_source_file
                    a manifest's paths: resolved without NUL or OS errors escaping, an envFile read
                    as above, a path source that must be an existing file
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.error import MarkedYAMLError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, SequenceNode

from mcp_reconcile.errors import ManifestError

# Bytes in one manifest, foreign config or envFile: real ones are a few KiB, and PyYAML (pure Python)
# takes about a second for the worst 256 KiB.
MAX_FILE_BYTES = 256 * 1024
# Nesting levels of mappings and sequences: a manifest needs under 10 (tests.calls arguments the most).
MAX_DEPTH = 64
# Values in one file (YAML nodes with each alias counted as the whole subtree it repeats, or JSON values):
# a manifest of 100 servers has about 5,000; the bound keeps parsing and checking a file to about a second.
MAX_NODES = 20_000
# Bytes in a path we open or resolve: Linux PATH_MAX.
MAX_PATH_BYTES = 4096
# Characters of a path quoted in a message; the rest is elided.
SHOWN_PATH_CHARS = 120
# How much is read per call when reading a file.
READ_CHUNK_BYTES = 64 * 1024

CORE_TAGS = tuple(f"tag:yaml.org,2002:{t}" for t in ("null", "bool", "int", "float", "str", "seq", "map"))
_SCALAR_TAGS = CORE_TAGS[:5]
_TOO_LARGE = "larger than {kib} KiB"


# ---- files -------------------------------------------------------------------------------------------

def shown_path(path: str | Path) -> str:
    """A path fit for a message: NULs made visible, a very long one cut in the middle."""
    text = str(path).replace("\0", "\\0")
    if len(text) <= SHOWN_PATH_CHARS:
        return text
    half = SHOWN_PATH_CHARS // 2
    return f"{text[:half]}...{text[-half:]}"


def path_problem(path: str | Path) -> str | None:
    """Why `path` cannot even be looked up (NUL byte, too long), or None."""
    text = str(path)
    if "\0" in text:
        return "the path contains a NUL byte"
    try:
        size = len(os.fsencode(text))
    except UnicodeError:
        return "the path is not valid text"
    if size > MAX_PATH_BYTES:
        return f"the path is {size} bytes long (at most {MAX_PATH_BYTES})"
    return None


def read_bounded(path: str | Path, *, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (/dev/null reads as empty).

    The ManifestError's reason does not repeat the path: the caller names the file.

    Opened without blocking and checked on the open descriptor, so a FIFO or device swapped in after a
    look at the path is still refused rather than waited on."""
    problem = path_problem(path)
    if problem:
        raise ManifestError(problem)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise ManifestError(f"cannot read: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            if _is_devnull(info):
                return b""
            raise ManifestError(f"not a regular file ({_kind_of(info.st_mode)})")
        if info.st_size > limit:
            raise ManifestError(_TOO_LARGE.format(kib=limit // 1024))
        return _read_at_most(fd, limit)
    except OSError as exc:
        raise ManifestError(f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _read_at_most(fd: int, limit: int) -> bytes:
    """Read to the end, refusing more than `limit` bytes (/proc files report a size of 0)."""
    chunks: list[bytes] = []
    total = 0
    while chunk := os.read(fd, READ_CHUNK_BYTES):
        total += len(chunk)
        if total > limit:
            raise ManifestError(_TOO_LARGE.format(kib=limit // 1024))
        chunks.append(chunk)
    return b"".join(chunks)


def _is_devnull(info: os.stat_result) -> bool:
    try:
        null = os.stat(os.devnull)
    except OSError:
        return False
    return (info.st_dev, info.st_ino) == (null.st_dev, null.st_ino)


def _kind_of(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    return next((name for test, name in kinds if test(mode)), "a special file")


def check_size(value: object, *, depth: int = MAX_DEPTH, nodes: int = MAX_NODES) -> None:
    """Raise ManifestError when a parsed value nests deeper than `depth` or holds more than `nodes` values
    (walked without recursion): the YAML loader's bounds, for JSON parsed by `json`."""
    stack: list[tuple[object, int]] = [(value, 0)]
    seen = 0
    while stack:
        item, level = stack.pop()
        seen += 1
        if seen > nodes:
            raise ManifestError(f"more than {nodes} values")
        if isinstance(item, dict | list):
            if level >= depth:
                raise ManifestError(f"nested more than {depth} levels deep")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)


# ---- paths and env files named by a manifest ----------------------------------------------------------

def local_path(value: str, base: Path, *, where: str) -> Path:
    """`value` (`~` expanded) resolved against `base`; a NUL byte, an over-long or unresolvable path is a
    problem at `where` rather than a ValueError or OSError from the OS."""
    problem = path_problem(value)
    if problem:
        raise ManifestError(problem, json_path=where)
    try:
        return (base / os.path.expanduser(value)).resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise ManifestError(f"cannot resolve {shown_path(value)!r}: {exc}", json_path=where) from None


def check_source_file(path: Path, *, where: str) -> None:
    """A path source runs in place, so its file must be there (or the server cannot be installed)."""
    try:
        is_file, exists = path.is_file(), path.exists()
    except OSError as exc:
        raise ManifestError(f"cannot look at {shown_path(path)!r}: {exc.strerror or exc}", json_path=where) from None
    if not is_file:
        raise ManifestError(f"{shown_path(path)!r} {'is not a file' if exists else 'does not exist'}",
                            json_path=where)


def read_env_file(path: Path, *, where: str) -> dict[str, str]:
    """An envFile's variables: a regular dotenv file of bounded size, or a problem at `where`.

    Names holding `=` or NUL are refused here: no process environment can carry them."""
    from dotenv import dotenv_values

    try:
        exists = path.is_file() or path.exists()
    except OSError:
        exists = True   # let the read say what is wrong with it
    if not exists:
        raise ManifestError(f"envFile {str(path)!r} does not exist", json_path=where)
    try:
        text = read_bounded(path).decode("utf-8-sig")
    except ManifestError as exc:
        raise ManifestError(f"envFile {shown_path(path)!r}: {exc.reason}", json_path=where) from None
    except UnicodeDecodeError:
        raise ManifestError(f"envFile {shown_path(path)!r} is not UTF-8 text", json_path=where) from None
    variables = {k: v for k, v in dotenv_values(stream=io.StringIO(text)).items() if v is not None}
    if any("=" in k or "\0" in k for k in variables) or any("\0" in v for v in variables.values()):
        raise ManifestError(f"envFile {shown_path(path)!r} has a name with '=' or a NUL byte in a name or value: "
                            "an environment cannot hold it", json_path=where)
    return variables


# ---- YAML --------------------------------------------------------------------------------------------

def yaml_documents(data: bytes | str) -> list[Any]:
    """Every document of a YAML stream, loaded with the bounded core-schema loader.

    Raises ManifestError("invalid YAML: ...", line=...) for a syntax error, a refused tag, a value its
    tag cannot hold, or a bound exceeded."""
    try:
        return _load_all(data)
    except yaml.YAMLError as exc:   # ReaderError (bad bytes) has no mark: its text gives the position
        mark = getattr(exc, "problem_mark", None)
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())   # one line
        raise ManifestError(f"invalid YAML: {problem}", line=mark.line + 1 if mark else None) from None
    except RecursionError:   # not expected within MAX_DEPTH; a listed problem all the same
        raise ManifestError(f"invalid YAML: nested more than {MAX_DEPTH} levels deep") from None


def _load_all(data: bytes | str) -> list[Any]:
    loader = BoundedLoader(data)   # reads the first bytes already: may raise ReaderError
    try:
        documents = []
        while loader.check_data():
            documents.append(loader.get_data())
        return documents
    except (ValueError, OverflowError, LookupError) as exc:   # PyYAML's scanner on `"\U99999999"` and the like
        raise MarkedYAMLError(problem=f"cannot decode a value ({exc})", problem_mark=loader.get_mark()) from None
    finally:
        loader.dispose()


def _scalar_guard(construct: Callable[[Any, Node], Any], tag: str) -> Callable[[Any, Node], Any]:
    """A core scalar constructor whose bad value (`!!int abc`) is a ConstructorError, not a ValueError."""
    def guarded(self: Any, node: Node) -> Any:
        try:
            return construct(self, node)
        except ConstructorError:
            raise
        except (ValueError, TypeError, LookupError, AttributeError, OverflowError):   # `!!int ""` is an IndexError
            short = tag.rsplit(":", 1)[-1]
            raise ConstructorError(None, None, f"{_shown_scalar(node)} is not a valid !!{short}",
                                   node.start_mark) from None
    return guarded


def _shown_scalar(node: Node) -> str:
    value = node.value if isinstance(node.value, str) else type(node).__name__
    return repr(value if len(value) <= SHOWN_PATH_CHARS else value[:SHOWN_PATH_CHARS] + "...")


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader narrowed to the core schema, with nesting and alias expansion bounded.

    Tags: only CORE_TAGS (and `<<` merges); `!!timestamp`, `!!binary`, `!!set`, `!!omap`, `!!pairs` and any
    local tag are refused, and a plain `2024-01-01` stays a string. Mapping keys must be strings.
    Aliases: each node's expanded size (itself plus every node below, aliases expanded) is kept, an
    alias adds its target's size to the file's total, and the total may not pass MAX_NODES. An alias
    to a node that contains it (a recursive structure) is refused."""

    yaml_constructors = {tag: (_scalar_guard(SafeConstructor.yaml_constructors[tag], tag) if tag in _SCALAR_TAGS
                               else SafeConstructor.yaml_constructors[tag]) for tag in CORE_TAGS}
    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag.rsplit(":", 1)[-1] not in ("timestamp", "value")]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def __init__(self, stream: bytes | str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0                     # nodes so far in this file, aliases expanded
        self._sizes: dict[int, int] = {}    # id(node) -> expanded size, for this document's nodes

    def compose_document(self) -> Node | None:
        self._sizes = {}
        return super().compose_document()

    def compose_node(self, parent: Node | None, index: object) -> Node | None:
        if self.check_event(AliasEvent):
            return self._compose_alias(parent, index)
        if self._depth >= MAX_DEPTH:
            raise ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is not None:
            self._sizes[id(node)] = 1 + sum(self._sizes.get(id(child), 1) for child in _children(node))
            self._count(1, node)
        return node

    def _compose_alias(self, parent: Node | None, index: object) -> Node | None:
        event = self.peek_event()
        target = self.anchors.get(event.anchor)
        if target is not None and id(target) not in self._sizes:
            raise ComposerError(None, None, f"alias *{event.anchor} is used inside its own anchor (a recursive "
                                "structure)", event.start_mark)
        node = super().compose_node(parent, index)
        if node is not None:
            self._count(self._sizes[id(node)], node, mark=event.start_mark)
        return node

    def _count(self, nodes: int, node: Node, *, mark: Any = None) -> None:
        self._nodes += nodes
        if self._nodes > MAX_NODES:
            raise ComposerError(None, None, f"more than {MAX_NODES} nodes once aliases are expanded",
                                mark or node.start_mark)

    def construct_undefined(self, node: Node) -> Any:
        raise ConstructorError(None, None, f"tag {node.tag!r} is not allowed: manifests use only str, int, float, "
                               "bool, null, seq and map", node.start_mark)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        mapping = super().construct_mapping(node, deep=deep)
        for key in mapping:
            if not isinstance(key, str):
                raise ConstructorError(None, None, f"the key {key!r} is not a string: quote it",
                                       node.start_mark)
        return mapping


BoundedLoader.add_constructor(None, BoundedLoader.construct_undefined)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []
