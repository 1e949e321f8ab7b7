"""`mcp-reconcile import FILE`: a foreign MCP config as equivalent YAML manifests.

Writes nothing unless every converted document validates; never overwrites a manifest unless asked.
`${VAR}` references are kept as references: secrets are not resolved, so none can be written out.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from mcp_reconcile import render
from mcp_reconcile.cli import Options
from mcp_reconcile.errors import ManifestError
from mcp_reconcile.formats import load_foreign
from mcp_reconcile.manifest import validate_document


def to_yaml(doc: dict[str, Any], *, origin: str) -> str:
    header = f"# Imported from {origin} by `mcp-reconcile import`.\n"
    return header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, allow_unicode=True)


def import_config(opts: Options) -> int:
    source = str(opts.import_file)
    try:
        converted = load_foreign(source)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return render.EXIT_ERROR
    for warning in converted.warnings:
        print(f"warning: {source} {warning}", file=sys.stderr)
    problems = [p.located(file=f"{source} -> {doc.get('metadata', {}).get('name', i)}", doc_index=i)
                for i, doc in enumerate(converted.documents) for p in validate_document(doc)]
    if problems:
        print(render.problems_text(problems), file=sys.stderr)
        return render.EXIT_ERROR
    if not converted.documents:
        print(f"error: {source}: no local MCP server to import", file=sys.stderr)
        return render.EXIT_ERROR
    texts = {doc["metadata"]["name"]: to_yaml(doc, origin=source) for doc in converted.documents}
    if not opts.import_dir:
        sys.stdout.write("---\n".join(texts.values()))
        return render.EXIT_OK
    out_dir = Path(opts.import_dir)
    targets = {name: out_dir / f"{name}.yaml" for name in texts}
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing and not opts.overwrite:
        print(f"error: would overwrite {', '.join(existing)} (use --overwrite)", file=sys.stderr)
        return render.EXIT_ERROR
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, path in targets.items():
        path.write_text(texts[name])
        print(f"wrote {path}")
    print(f"Imported {len(texts)} server(s) from {source} ({converted.format} format).")
    return render.EXIT_OK
