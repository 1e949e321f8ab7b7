"""JSON with comments (VS Code's JSONC): `//` and `/* */` comments and trailing commas.

Client configs are hand-edited, so every foreign file goes through this: plain JSON passes unchanged.
The stripper replaces what it removes with spaces (newlines kept), so the line and column that
`json` reports for an error are the ones the user sees in the editor.
"""

from __future__ import annotations

import json

from mcp_reconcile import safeload
from mcp_reconcile.errors import ManifestError


def loads(text: str, *, file: str) -> object:
    """Parse JSONC text; a syntax error, or a value beyond `safeload`'s depth and node bounds, becomes a
    ManifestError (with the line where json gives one)."""
    try:
        stripped = strip_comments(text)
    except _UnterminatedComment as exc:
        raise ManifestError("not valid JSON: unterminated /* comment", file=file, line=exc.line) from None
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"not valid JSON: {exc.msg} (column {exc.colno})", file=file,
                            line=exc.lineno) from None
    except RecursionError:   # json recurses per nesting level: a deep file must be a problem, not a crash
        raise ManifestError(f"nested more than {safeload.MAX_DEPTH} levels deep", file=file) from None
    except ValueError as exc:   # e.g. an integer of more digits than Python converts
        raise ManifestError(f"not valid JSON: {exc}", file=file) from None
    try:
        safeload.check_size(data)
    except ManifestError as exc:
        raise exc.located(file=file) from None
    return data


class _UnterminatedComment(ValueError):
    def __init__(self, line: int) -> None:
        self.line = line
        super().__init__(f"unterminated comment at line {line}")


def strip_comments(text: str) -> str:
    """Blank out comments and trailing commas outside strings; keep every newline and column."""
    out: list[str] = []
    trailing_comma: int | None = None   # index in `out` of a comma seen with nothing but blanks since
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            end = _string_end(text, i)
            out.append(text[i:end])
            trailing_comma, i = None, end
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise _UnterminatedComment(text.count("\n", 0, i) + 1)
            out.append(_blank(text[i:end + 2]))
            i = end + 2
        else:
            if c == ",":
                trailing_comma = len(out)
            elif c in "}]" and trailing_comma is not None:
                out[trailing_comma] = " "
                trailing_comma = None
            elif not c.isspace():
                trailing_comma = None
            out.append(c)
            i += 1
    return "".join(out)


def _string_end(text: str, start: int) -> int:
    """Index just past the string literal that opens at `start` (or the end of an unterminated one)."""
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
        elif c == '"' or c == "\n":   # a raw newline ends it: let json report the broken string there
            return i + 1 if c == '"' else i
        else:
            i += 1
    return len(text)


def _blank(chunk: str) -> str:
    return "".join(ch if ch == "\n" else " " for ch in chunk)
