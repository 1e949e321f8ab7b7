"""`status` on an 80-column terminal: endpoint URLs stay whole, so they can be copied."""

from __future__ import annotations

from io import StringIO

from rich.console import Console

from mcp_reconcile.status import status_table


def row(name: str, url: str | None, message: str) -> dict:  # type: ignore[type-arg]
    return {"name": name, "phase": "CrashLoopBackOff", "ready": False, "restarts": 12, "age_s": 3725.0,
            "url": url, "cpu_seconds": 12.34, "rss_mb": 123.4, "message": message}


def test_urls_are_never_wrapped_on_an_80_column_terminal() -> None:
    rows = [row("filesystem-server", "http://127.0.0.1:31234/filesystem/mcp",
                "back-off 40s restarting failed server: exited with code 1 (ENOENT: no such file)"),
            row("time", "http://127.0.0.1:20001/mcp", "Ready"), row("new", None, "Pending")]
    out = StringIO()
    Console(file=out, width=80, color_system=None).print(status_table(rows))
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 80 for line in lines), out.getvalue()
    for url in ("http://127.0.0.1:31234/filesystem/mcp", "http://127.0.0.1:20001/mcp"):
        assert any(url in line for line in lines), out.getvalue()
