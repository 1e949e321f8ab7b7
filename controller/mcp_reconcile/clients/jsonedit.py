"""Edit one member of a JSON / JSONC object in place, leaving every other byte of the file as it was.

A client config is the user's file: re-serialising it would drop VS Code's comments, reorder keys, change the
indentation and churn the whole file in version control. So we locate members by offset and splice text.
Offsets come from the comment-stripped text (`formats.jsonc.strip_comments` keeps every offset: comments and
trailing commas become spaces), and the edits are applied to the original text. Values are written with the
file's own indent unit. (VS Code's `jsonc-parser` `modify()` works the same way.)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from mcp_reconcile.formats import jsonc

_DECODER = json.JSONDecoder()
_INDENTED_KEY = re.compile(r"^([ \t]+)\"", re.MULTILINE)


@dataclass(frozen=True)
class Member:
    key: str
    key_start: int
    value_start: int
    value_end: int
    comma: int | None   # offset of the comma after the value (never a trailing one: those are blanked)


@dataclass(frozen=True)
class Span:
    start: int          # offset of "{"
    end: int            # offset of "}"
    members: tuple[Member, ...]

    def find(self, key: str) -> Member | None:
        found = [m for m in self.members if m.key == key]
        return found[-1] if found else None   # JSON parsers keep the last duplicate


def _skip_ws(s: str, i: int) -> int:
    while i < len(s) and s[i].isspace():
        i += 1
    return i


def scan_object(stripped: str, start: int) -> Span:
    """The members of the object whose "{" is at `start` in comment-stripped, already validated text."""
    i = _skip_ws(stripped, start + 1)
    members: list[Member] = []
    if stripped[i] == "}":
        return Span(start, i, ())
    while True:
        key, after_key = _DECODER.raw_decode(stripped, i)
        colon = _skip_ws(stripped, after_key)
        value_start = _skip_ws(stripped, colon + 1)
        _, value_end = _DECODER.raw_decode(stripped, value_start)
        n = _skip_ws(stripped, value_end)
        comma = None
        if stripped[n] == ",":
            comma, n = n, _skip_ws(stripped, n + 1)
        members.append(Member(key, i, value_start, value_end, comma))
        if stripped[n] == "}":
            return Span(start, n, tuple(members))
        i = n


def indent_unit(text: str) -> str:
    """The file's indent step (the first indented key's leading whitespace), two spaces by default."""
    match = _INDENTED_KEY.search(text)
    return match.group(1) if match else "  "


def _line_indent(text: str, pos: int) -> str:
    line_start = text.rfind("\n", 0, pos) + 1
    lead = text[line_start:pos]
    return lead if lead.strip() == "" else ""


def trailing_comma(text: str, pos: int, end: int) -> int | None:
    """The offset of a trailing comma between `pos` (after a last value) and `end` (the "}"), if any,
    skipping whitespace and comments in the original text."""
    i = pos
    while i < end:
        if text[i].isspace():
            i += 1
        elif text.startswith("//", i):
            nl = text.find("\n", i)
            i = end if nl < 0 else nl
        elif text.startswith("/*", i):
            close = text.find("*/", i + 2)
            i = end if close < 0 else close + 2
        else:
            return i if text[i] == "," else None
    return None


def _render(value: Any, unit: str, base: str) -> str:
    return json.dumps(value, indent=unit, ensure_ascii=False).replace("\n", "\n" + base)


class JsonText:
    """The text of a JSON(C) file whose root is an object, with member-level edits."""

    def __init__(self, text: str, *, file: str) -> None:
        self.file = file
        self.text = text
        self.data = jsonc.loads(text, file=file) if text.strip() else {}
        if not isinstance(self.data, dict):
            from mcp_reconcile.errors import ManifestError
            raise ManifestError("the top level is not a JSON object", file=file)

    def _reload(self, text: str) -> None:
        self.text = text
        self.data = jsonc.loads(text, file=self.file)

    def _root(self) -> tuple[str, Span]:
        stripped = jsonc.strip_comments(self.text)
        return stripped, scan_object(stripped, _skip_ws(stripped, 0))

    def set_member(self, path: tuple[str, ...], value: Any) -> None:
        """Set object member `path` (e.g. ("mcpServers", "time")) to `value`, creating parents as needed."""
        if not self.text.strip():
            nested: Any = value
            for key in reversed(path):
                nested = {key: nested}
            self._reload(json.dumps(nested, indent=2, ensure_ascii=False) + "\n")
            return
        stripped, span = self._root()
        for depth, key in enumerate(path):
            member = span.find(key)
            if member is None:
                nested = value
                for inner in reversed(path[depth + 1:]):
                    nested = {inner: nested}
                self._insert(span, key, nested)
                return
            if depth == len(path) - 1:
                base = _line_indent(self.text, member.key_start)
                new = _render(value, indent_unit(self.text), base)
                self._reload(self.text[:member.value_start] + new + self.text[member.value_end:])
                return
            if stripped[member.value_start] != "{":
                from mcp_reconcile.errors import ManifestError
                raise ManifestError("is not an object", file=self.file, json_path=".".join(path[:depth + 1]))
            span = scan_object(stripped, member.value_start)

    def _insert(self, span: Span, key: str, value: Any) -> None:
        unit = indent_unit(self.text)
        if span.members:
            last = span.members[-1]
            ind = _line_indent(self.text, last.key_start) or unit
            member = f'{json.dumps(key, ensure_ascii=False)}: {_render(value, unit, ind)}'
            comma = trailing_comma(self.text, last.value_end, span.end)
            anchor = last.value_end if comma is None else comma + 1
            eol = self.text.find("\n", anchor)
            stripped = jsonc.strip_comments(self.text)
            # after a comment that ends the last member's line, not before it
            pos = eol if 0 <= eol < span.end and stripped[anchor:eol].strip() == "" else anchor
            t = self.text
            if comma is None:
                self._reload(t[:last.value_end] + "," + t[last.value_end:pos] + f"\n{ind}{member}" + t[pos:])
            else:   # the file ends its members with a comma: so does the new one
                self._reload(t[:pos] + f"\n{ind}{member}," + t[pos:])
            return
        line_start = self.text.rfind("\n", 0, span.start) + 1
        line = self.text[line_start:span.start]
        outer = line[:len(line) - len(line.lstrip())]   # the indentation of the line the "{" is on
        ind = outer + unit
        member = f'{json.dumps(key, ensure_ascii=False)}: {_render(value, unit, ind)}'
        inside = self.text[span.start + 1:span.end]
        if inside.strip() == "":
            new = f"{{\n{ind}{member}\n{outer}}}"
            self._reload(self.text[:span.start] + new + self.text[span.end + 1:])
        else:   # only comments inside: keep them after the new member
            self._reload(self.text[:span.start + 1] + f"\n{ind}{member}" + self.text[span.start + 1:])

    def delete_member(self, path: tuple[str, ...]) -> bool:
        """Remove member `path` with its comma and its own line(s); False when it is not there."""
        if not self.text.strip():
            return False
        stripped, span = self._root()
        for key in path[:-1]:
            member = span.find(key)
            if member is None or stripped[member.value_start] != "{":
                return False
            span = scan_object(stripped, member.value_start)
        member = span.find(path[-1])
        if member is None:
            return False
        index = span.members.index(member)
        start = member.key_start - len(_line_indent(self.text, member.key_start))
        end = member.comma + 1 if member.comma is not None else member.value_end
        eol = stripped.find("\n", end)
        if eol >= 0 and stripped[end:eol].strip() == "" and eol < span.end:
            end = eol + 1
        if start == member.key_start:   # not alone on its line: keep the line, drop the member only
            end = member.comma + 1 if member.comma is not None else member.value_end
        trailing = member.comma is None and trailing_comma(self.text, member.value_end, span.end) is not None
        text = self.text[:start] + self.text[end:]
        if member.comma is None and index > 0 and not trailing:
            prev_comma = span.members[index - 1].comma
            assert prev_comma is not None
            text = text[:prev_comma] + text[prev_comma + 1:]
        self._reload(text)
        self._collapse_if_empty(path[:-1])
        return True

    def _collapse_if_empty(self, path: tuple[str, ...]) -> None:
        """`{\\n  }` left by removing the last member becomes `{}` (comments inside are kept as they are)."""
        stripped, span = self._root()
        for key in path:
            member = span.find(key)
            if member is None:
                return
            span = scan_object(stripped, member.value_start)
        if not span.members and self.text[span.start + 1:span.end].strip() == "":
            self._reload(self.text[:span.start + 1] + self.text[span.end:])
