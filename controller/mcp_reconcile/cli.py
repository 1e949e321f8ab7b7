"""Command line: argparse -> Options -> one call -> exit code. No logic lives here.

Heavy modules (mcp, the loop, the installers) are imported inside the command that needs them so that
`plan`, `validate` and `status` start fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from mcp_reconcile import __version__

COMMANDS = ("apply", "plan", "validate", "run", "status", "events", "logs", "test", "import", "stop-all",
            "runner")
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
    lines: int = 50
    junit: str | None = None
    import_file: str | None = None
    import_dir: str | None = None
    overwrite: bool = False

    def manifest_paths(self) -> list[str]:
        if self.manifests:
            return self.manifests
        env = os.environ.get("MCP_RECONCILE_MANIFESTS")
        return env.split(os.pathsep) if env else [DEFAULT_MANIFESTS]


def _common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    d = argparse.SUPPRESS if suppress else None
    parser.add_argument("-f", "--filename", "--config", dest="manifests", action="append", default=d,
                        metavar="PATH", help="manifest file or directory, or a foreign config "
                        "(servers_config.json, mcpServers, VS Code, server.json); repeatable "
                        "(default: $MCP_RECONCILE_MANIFESTS or ./manifests)")
    parser.add_argument("--state-dir", default=d, help="state directory (default: $MCP_RECONCILE_STATE_DIR "
                        f"or ./{DEFAULT_STATE_DIR})")
    parser.add_argument("-o", "--output", choices=("text", "json"), default=d, help="output format")


def _apply_flags(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    d = argparse.SUPPRESS if suppress else None
    s = argparse.SUPPRESS if suppress else False
    parser.add_argument("--dry-run", action="store_true", default=s, help="show the plan, change nothing")
    parser.add_argument("--detailed-exitcode", action="store_true", default=s,
                        help="with plan: exit 0 no changes, 2 changes, 1 error")
    parser.add_argument("--force", action="store_true", default=s,
                        help="continue past failed prerequisites and gate tests")
    parser.add_argument("--sequential", action="store_true", default=s, help="install one server at a time")
    parser.add_argument("--skip-prerequisites", action="store_true", default=s)
    parser.add_argument("--max-parallel-installs", type=int, default=d, metavar="N")
    parser.add_argument("--max-parallel-starts", type=int, default=d, metavar="N")
    parser.add_argument("--webhook-url", default=d, help="POST alerts (status change, recovery, critical) here")
    parser.add_argument("--install", dest="install_only", action="store_true", default=s,
                        help="legacy: install only, start nothing")
    parser.add_argument("--test", dest="test_after", action="store_true", default=s,
                        help="legacy: run the MCP test suite after applying")
    parser.add_argument("--monitor", action="store_true", default=s,
                        help="legacy: keep reconciling after applying (same as `run`)")
    parser.add_argument("--monitor-duration", dest="monitor_duration_s", type=float, default=d, metavar="N",
                        help="run the loop N seconds, then exit")
    parser.add_argument("--all", action="store_true", default=s, help="legacy: install, test and monitor")


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 1: exit code 2 means "changes" under --detailed-exitcode."""

    def error(self, message: str):  # type: ignore[no-untyped-def]
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mcp-reconcile", description="Declarative reconciliation controller for MCP servers. "
        "Without a command: apply the manifests once (with --dry-run: show the plan).")
    parser.add_argument("--version", action="version", version=f"mcp-reconcile {__version__}")
    _common(parser, suppress=False)
    _apply_flags(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_: str, *, apply_flags: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        _common(p, suppress=True)
        if apply_flags:
            _apply_flags(p, suppress=True)
        return p

    add("apply", "reconcile once: install, start, test, stop, remove until the manifests match", apply_flags=True)
    add("plan", "show what apply would do (same as --dry-run)", apply_flags=True)
    add("validate", "check manifests; exit 1 with every problem listed")
    run = add("run", "the long-running controller: watch manifests, probe health, restart", apply_flags=True)
    run.add_argument("--resync-interval", dest="resync_interval_s", type=float, default=argparse.SUPPRESS)
    add("status", "servers, phases, readiness, restarts, endpoints")
    ev = add("events", "the audit log")
    ev.add_argument("--follow", action="store_true", default=argparse.SUPPRESS)
    ev.add_argument("--server", default=argparse.SUPPRESS)
    lg = add("logs", "a server's stderr log")
    lg.add_argument("names", nargs=1, metavar="NAME")
    lg.add_argument("--follow", action="store_true", default=argparse.SUPPRESS)
    lg.add_argument("-n", "--lines", type=int, default=argparse.SUPPRESS)
    ts = add("test", "run the MCP test suite against servers from the manifests", apply_flags=True)
    ts.add_argument("names", nargs="*", metavar="NAME")
    ts.add_argument("--junit", default=argparse.SUPPRESS, metavar="FILE", help="write JUnit XML here")
    im = add("import", "convert a foreign MCP config into YAML manifests")
    im.add_argument("import_file", metavar="FILE")
    im.add_argument("-d", "--dir", dest="import_dir", default=argparse.SUPPRESS, metavar="DIR",
                    help="write NAME.yaml files here (default: print to stdout)")
    im.add_argument("--overwrite", action="store_true", default=argparse.SUPPRESS)
    add("stop-all", "stop every runner of the state dir (installs are kept)")
    sub.add_parser("runner", help="(internal) the per-server shim", add_help=False)
    return parser


def parse(argv: Sequence[str]) -> Options:
    argv = list(argv)
    if argv[:1] == ["runner"]:
        return Options(command="runner", names=argv[1:])
    ns = build_parser().parse_args(argv)
    values = {k: v for k, v in vars(ns).items() if v is not None}
    opts = Options(**{k: v for k, v in values.items() if k in Options.__dataclass_fields__ and k != "all"})
    opts.command = values.get("command") or "apply"
    opts.state_dir = values.get("state_dir") or os.environ.get("MCP_RECONCILE_STATE_DIR") or DEFAULT_STATE_DIR
    if opts.command in ("apply", "run") and opts.dry_run:
        opts.command = "plan"
    if values.get("all"):
        opts.test_after = opts.monitor = True
    if opts.command == "apply" and (opts.monitor or opts.monitor_duration_s is not None) and not opts.dry_run:
        opts.command = "run"
    if opts.sequential:
        opts.max_parallel_installs = 1
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse(sys.argv[1:] if argv is None else argv)
    if opts.command == "runner":
        from mcp_reconcile import runner

        return runner.main(opts.names)
    from mcp_reconcile import commands

    return commands.dispatch(opts)
