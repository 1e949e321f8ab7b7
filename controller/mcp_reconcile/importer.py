"""`mcp-reconcile import FILE`: a foreign MCP config as equivalent YAML manifests.

Writes nothing unless every converted document validates; never overwrites a manifest unless asked.
`${VAR}` references are kept as references. Literal secrets of client configs (env names like *_KEY,
*_TOKEN, *PASSWORD) never go into a manifest: with -d they move to NAME.secrets.env (0600, the
manifest's envFile), on stdout they become ${VAR} references for the controller's environment.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from mcp_reconcile import render
from mcp_reconcile.errors import ManifestError, McpReconcileError
from mcp_reconcile.formats import load_foreign
from mcp_reconcile.manifest import validate_document
from mcp_reconcile.safeload import check_source_file, local_path
from mcp_reconcile.settings import Options

# Env names whose literal values are taken for secrets when importing a client config.
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASS(WORD|WD)?|CREDENTIAL|AUTH|PAT$", re.IGNORECASE)


def take_literal_secrets(doc: dict[str, Any]) -> dict[str, str]:
    """Remove literal secret-looking env values from `doc` (a client config's plaintext keys); returns them."""
    env = doc["spec"].get("env") or {}
    taken = {k: str(v) for k, v in env.items()
             if isinstance(v, str) and v and "${" not in v and SECRET_NAME.search(k)}
    for k in taken:
        del env[k]
    if not env:
        doc["spec"].pop("env", None)
    return taken


def path_problems(doc: dict[str, Any], *, base_dir: Path) -> list[ManifestError]:
    """A path source must name a file that is there: a manifest naming a missing one cannot be installed,
    and a launcher taken for the server (`path: uv`) shows up here rather than at the first apply."""
    ref = (doc.get("spec", {}).get("source") or {}).get("path")
    if not isinstance(ref, str):
        return []
    try:
        check_source_file(local_path(ref, base_dir, where="spec.source.path"), where="spec.source.path")
    except ManifestError as exc:
        return [exc]
    return []


def write_secrets_file(path: Path, values: dict[str, str]) -> None:
    """A dotenv file only its owner can read (0600), created before anything is written into it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("# Secrets moved out of an imported client config by `mcp-reconcile import` (keep it 0600).\n")
        for k, v in values.items():
            fh.write(f"{k}={json.dumps(v)}\n")


def to_yaml(doc: dict[str, Any], *, origin: str) -> str:
    header = f"# Imported from {origin} by `mcp-reconcile import`.\n"
    return header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, allow_unicode=True)


def converted_env(documents: list[dict[str, Any]], name: str) -> dict[str, Any]:
    doc = next(d for d in documents if d["metadata"]["name"] == name)
    return doc["spec"].setdefault("env", {})


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
                for i, doc in enumerate(converted.documents)
                for p in [*validate_document(doc), *path_problems(doc, base_dir=Path(source).parent)]]
    if problems:
        print(render.problems_text(problems), file=sys.stderr)
        return render.EXIT_ERROR
    if opts.take_over and not opts.import_dir:
        print("error: --take-over needs -d DIR (the manifests must be written before the client file changes)",
              file=sys.stderr)
        return render.EXIT_ERROR
    if not converted.documents:
        print(f"error: {source}: no local MCP server to import", file=sys.stderr)
        return render.EXIT_ERROR
    secrets = {doc["metadata"]["name"]: take_literal_secrets(doc) for doc in converted.documents}
    secrets = {name: values for name, values in secrets.items() if values}
    if not opts.import_dir:
        for name, values in secrets.items():   # never printed: referenced as ${VAR} for the controller's env
            env = converted_env(converted.documents, name)
            env.update({k: "${" + k + "}" for k in values})
            print(f"warning: {name}: literal secrets replaced by references; set {', '.join(values)} in the "
                  "controller's environment", file=sys.stderr)
    texts = {doc["metadata"]["name"]: to_yaml(doc, origin=source) for doc in converted.documents}
    if not opts.import_dir:
        sys.stdout.write("---\n".join(texts.values()))
        return render.EXIT_OK
    out_dir = Path(opts.import_dir)
    if out_dir.exists() and not out_dir.is_dir():
        print(f"error: -d {out_dir} is not a directory", file=sys.stderr)
        return render.EXIT_ERROR
    targets = {name: out_dir / f"{name}.yaml" for name in texts}
    secret_files = {name: out_dir / f"{name}.secrets.env" for name in secrets}
    existing = [str(p) for p in [*targets.values(), *secret_files.values()] if p.exists()]
    if existing and not opts.overwrite:
        print(f"error: would overwrite {', '.join(existing)} (use --overwrite)", file=sys.stderr)
        return render.EXIT_ERROR
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, path in secret_files.items():
        write_secrets_file(path, secrets[name])
        doc = next(d for d in converted.documents if d["metadata"]["name"] == name)
        doc["spec"]["envFile"] = path.name
        texts[name] = to_yaml(doc, origin=source)
        print(f"wrote {path} (mode 0600): {', '.join(secrets[name])} moved out of the manifest")
    for name, path in targets.items():
        path.write_text(texts[name])
        print(f"wrote {path}")
    print(f"Imported {len(texts)} server(s) from {source} ({converted.format} format).")
    if opts.take_over:
        return _take_over(opts, list(texts))
    return render.EXIT_OK


def _take_over(opts: Options, names: list[str]) -> int:
    from mcp_reconcile.store import StateDir
    from mcp_reconcile.takeover import take_over

    try:
        lines = take_over(Path(str(opts.import_file)), names, StateDir(opts.state_dir), client_name=opts.client)
    except McpReconcileError as exc:
        print(f"error: --take-over: {exc} (the manifests were written; the client file is unchanged)",
              file=sys.stderr)
        return render.EXIT_ERROR
    for line in lines:
        print(line)
    print(f"Run `mcp-reconcile apply -f {opts.import_dir}` to start them under mcp-reconcile.")
    return render.EXIT_OK
