"""Per-command settings: `Options`, every flag of every command, parsed (cli.py fills it in).

A leaf module: it imports nothing of the package, so the commands, the loop and the views that read their
settings never import back into `cli` (the layers contract in `.importlinter`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

DEFAULT_STATE_DIR = ".mcp-reconcile"
DEFAULT_MANIFESTS = "manifests"


@dataclass
class Options:
    """Every flag of every command, parsed; commands read what they need."""

    command: str = "apply"
    manifests: list[str] = field(default_factory=list)
    state_dir: str = DEFAULT_STATE_DIR
    output: str = "text"
    detailed_exitcode: bool = False
    dry_run: bool = False
    force: bool = False
    sequential: bool = False
    skip_prerequisites: bool = False
    max_parallel_installs: int = 4
    max_parallel_starts: int = 8
    monitor: bool = False
    monitor_duration_s: float | None = None
    resync_interval_s: float = 60.0
    webhook_url: str | None = None
    install_only: bool = False
    test_after: bool = False
    names: list[str] = field(default_factory=list)
    follow: bool = False
    server: str | None = None
    lines: int | None = None
    since_s: float | None = None
    watch: bool = False
    junit: str | None = None
    import_file: str | None = None
    import_dir: str | None = None
    overwrite: bool = False
    take_over: bool = False
    metrics_port: int | None = None      # run: serve Prometheus /metrics on 127.0.0.1:PORT
    render_target: str = "kubernetes"
    namespace: str | None = None
    image: str | None = None
    render_dir: str | None = None
    clients_action: str = "list"          # clients: list | write | remove
    client: str | None = None
    scope: str = "user"

    def manifest_paths(self) -> list[str]:
        if self.manifests:
            return self.manifests
        env = os.environ.get("MCP_RECONCILE_MANIFESTS")
        return env.split(os.pathsep) if env else [DEFAULT_MANIFESTS]
