"""Command line: argparse -> Options -> one call -> exit code. No logic lives here.

Heavy modules (mcp, the loop, the installers) are imported inside the command that needs them so that
`plan`, `validate` and `status` start fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from typing import Any

from mcp_reconcile import __version__

# Options lives in a leaf module (settings.py) so that nothing imports back into cli; re-exported here.
from mcp_reconcile.settings import DEFAULT_MANIFESTS, DEFAULT_STATE_DIR, Options

COMMANDS = ("apply", "plan", "validate", "run", "status", "describe", "events", "logs", "test", "import", "stop-all",
            "runner", "connect", "render", "serve", "probe", "clients")


def parse_duration(text: str) -> float:
    """`30s`, `10m`, `2h`, `1d` or plain seconds -> seconds (an argparse type: a bad value is a usage error)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 30s, 10m, 2h, 1d)") from None
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration cannot be negative")
    return seconds


class _Help(argparse.RawDescriptionHelpFormatter):
    """Every option with a value shows its default, taken from `Options` (parsers use SUPPRESS so that a
    subcommand's flag never overwrites the same flag given before the subcommand)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or not action.option_strings or action.nargs == 0:
            return text
        fld = Options.__dataclass_fields__.get(action.dest)
        value = fld.default if fld is not None else None
        if value is None or value is dataclasses.MISSING or value == "":
            return text
        return f"{text} (default: {value:g})" if isinstance(value, float) else f"{text} (default: {value})"


def _opt(parser: argparse.ArgumentParser | Any, *names: str, **kw: Any) -> argparse.Action:
    """add_argument with default=SUPPRESS (the real default lives in Options) and store_true's default False."""
    kw.setdefault("default", argparse.SUPPRESS)
    return parser.add_argument(*names, **kw)


def _manifests_flag(parser: argparse.ArgumentParser) -> None:
    _opt(parser, "-f", "--filename", "--config", dest="manifests", action="append", metavar="PATH",
         help="manifest file or directory, or a foreign config (servers_config.json, mcpServers, VS Code, "
         f"server.json); repeatable (default: $MCP_RECONCILE_MANIFESTS, else ./{DEFAULT_MANIFESTS}; for "
         "status and describe, else the paths last applied to the state dir)")


def _state_flag(parser: argparse.ArgumentParser) -> None:
    _opt(parser, "--state-dir", metavar="DIR",
         help=f"state directory (default: $MCP_RECONCILE_STATE_DIR or ./{DEFAULT_STATE_DIR})")


def _output_flag(parser: argparse.ArgumentParser, what: str = "tables and lines for people") -> None:
    _opt(parser, "-o", "--output", choices=("text", "json"), help=f"text: {what}; json: for machines")


def _apply_flags(parser: argparse.ArgumentParser, *, run: bool = False) -> None:
    """The flags `apply` and `run` honour (installs, starts, gate tests)."""
    _opt(parser, "--dry-run", action="store_true", help="show the plan, change nothing (same as `plan`)")
    _opt(parser, "--force", action="store_true", help="continue past failed prerequisites and gate tests")
    _opt(parser, "--skip-prerequisites", action="store_true", help="do not check node/npm/uv before installing")
    _opt(parser, "--max-parallel-installs", type=int, metavar="N", help="installs at a time")
    _opt(parser, "--max-parallel-starts", type=int, metavar="N", help="starts at a time within a dependency wave")
    _opt(parser, "--test", dest="test_after", action="store_true", help="run the MCP test suite afterwards")
    if not run:
        _opt(parser, "--sequential", action="store_true", help="install one server at a time")
        _opt(parser, "--install", dest="install_only", action="store_true", help="install only, start nothing")


def _run_flags(parser: argparse.ArgumentParser) -> None:
    """The flags only the long-running controller honours."""
    _opt(parser, "--monitor-duration", dest="monitor_duration_s", type=float, metavar="N",
         help="run the loop N seconds, then exit (default: until stopped)")
    _opt(parser, "--resync-interval", dest="resync_interval_s", type=float, metavar="S",
         help="seconds between full passes over every server")
    _opt(parser, "--webhook-url", metavar="URL", help="POST alerts (status change, recovery, critical) here")
    _opt(parser, "--metrics-port", type=int, metavar="PORT",
         help="serve Prometheus metrics at http://127.0.0.1:PORT/metrics")


def _legacy_flags(parser: argparse.ArgumentParser) -> None:
    """The seed script's flags, kept on the bare command so its invocations still work."""
    group = parser.add_argument_group(
        "legacy flags (the seed script's; prefer the subcommands)",
        "--install = apply --install; --test = apply --test; --monitor = run; --all = --test --monitor")
    _opt(group, "--install", dest="install_only", action="store_true", help="install only, start nothing")
    _opt(group, "--test", dest="test_after", action="store_true", help="run the MCP test suite after applying")
    _opt(group, "--monitor", action="store_true", help="keep reconciling after applying (same as `run`)")
    _opt(group, "--monitor-duration", dest="monitor_duration_s", type=float, metavar="N",
         help="with --monitor: run N seconds, then exit (default: until stopped)")
    _opt(group, "--all", action="store_true", help="install, test and monitor")
    _opt(group, "--sequential", action="store_true", help="install one server at a time")
    _opt(group, "--skip-prerequisites", action="store_true", help="do not check node/npm/uv before installing")
    _opt(group, "--force", action="store_true", help="continue past failed prerequisites and gate tests")


def _follow_flags(parser: argparse.ArgumentParser, what: str, default_n: str) -> None:
    _opt(parser, "-n", "--lines", type=int, metavar="N", help=f"show the last N {what} (default: {default_n})")
    _opt(parser, "--since", dest="since_s", type=parse_duration, metavar="DURATION",
         help=f"only {what} newer than this (30s, 10m, 2h, 1d)")
    _opt(parser, "--follow", action="store_true", help=f"keep printing new {what} (starts at the end unless -n)")


CLIENTS_HELP = "agent configs: list them, write or remove entries for the servers (see Connect your agent)"


def _clients_flags(cl: argparse.ArgumentParser) -> argparse.ArgumentParser:
    cl.add_argument("clients_action", choices=("list", "write", "remove"), metavar="list|write|remove",
                    help="list clients and their servers; write or remove entries")
    cl.add_argument("names", nargs="*", metavar="SERVER", help="servers (default: write every running server; "
                    "remove every entry mcp-reconcile wrote)")
    _opt(cl, "--client", metavar="NAME", help="claude-desktop, claude-code, vscode, cursor, windsurf, gemini-cli, "
         "codex or goose")
    _opt(cl, "--scope", choices=("user", "project"), help="the user's config or the current directory's")
    _opt(cl, "--dry-run", action="store_true", help="print the diff, write nothing")
    _opt(cl, "--force", action="store_true", help="replace or remove entries mcp-reconcile did not write")
    return cl


def _parse_clients(argv: list[str]) -> Options:
    """`clients ACTION [SERVER...]` with flags anywhere among the names (argparse subparsers cannot)."""
    parser = _Parser(prog="mcp-reconcile clients", description=CLIENTS_HELP, formatter_class=_Help)
    _manifests_flag(parser)
    _state_flag(parser)
    _output_flag(parser)
    ns = _clients_flags(parser).parse_intermixed_args(argv)
    values = vars(ns)
    values.setdefault("state_dir", os.environ.get("MCP_RECONCILE_STATE_DIR") or DEFAULT_STATE_DIR)
    return Options(command="clients", **values)


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 1: exit code 2 means "changes" under --detailed-exitcode."""

    def error(self, message: str):  # type: ignore[no-untyped-def]
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mcp-reconcile", formatter_class=_Help, description="Declarative reconciliation controller for MCP "
        "servers. Without a command: apply the manifests once (with --dry-run: show the plan).")
    parser.add_argument("--version", action="version", version=f"mcp-reconcile {__version__}")
    _manifests_flag(parser)
    _state_flag(parser)
    _output_flag(parser, "with --dry-run, the plan for people")
    _opt(parser, "--dry-run", action="store_true", help="show the plan, change nothing (same as `plan`)")
    _opt(parser, "--detailed-exitcode", action="store_true",
         help="with --dry-run: exit 0 no changes, 2 changes, 1 error")
    _opt(parser, "--max-parallel-installs", type=int, metavar="N", help="installs at a time")
    _opt(parser, "--max-parallel-starts", type=int, metavar="N", help="starts at a time within a dependency wave")
    _legacy_flags(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_: str, *, apply_flags: bool = False, manifests: bool = True, state: bool = True,
            output: bool = False) -> argparse.ArgumentParser:
        """A subcommand with the shared flags it honours: -f, --state-dir, -o and (apply_flags) apply's."""
        p = sub.add_parser(name, help=help_, description=help_, formatter_class=_Help)
        if manifests:
            _manifests_flag(p)
        if state:
            _state_flag(p)
        if output:
            _output_flag(p)
        if apply_flags:
            _apply_flags(p, run=name == "run")
        return p

    add("apply", "reconcile once: install, start, test, stop, remove until the manifests match", apply_flags=True)
    pl = add("plan", "show what apply would do (same as --dry-run)", output=True)
    _opt(pl, "--detailed-exitcode", action="store_true", help="exit 0 no changes, 2 changes, 1 error")
    add("validate", "check manifests; exit 1 with every problem listed", state=False, output=True)
    run = add("run", "the long-running controller: watch manifests, probe health, restart", apply_flags=True)
    _run_flags(run)
    st = add("status", "servers, phases, readiness, restarts, endpoints", output=True)
    _opt(st, "--watch", action="store_true", help="refresh in place until Ctrl-C")
    ds = add("describe", "one server in detail: versions, conditions, restarts, gate, events, logs", output=True)
    ds.add_argument("names", nargs=1, metavar="NAME", help="the server")
    ev = add("events", "the audit log: one line per event", manifests=False, output=True)
    _follow_flags(ev, "events", "all; none with --follow")
    _opt(ev, "--server", metavar="NAME", help="only this server's events")
    lg = add("logs", "a server's stderr log, with a marker at each restart", manifests=False)
    lg.add_argument("names", nargs=1, metavar="NAME", help="the server")
    _follow_flags(lg, "lines", "50; all with --since; 10 with --follow")
    ts = add("test", "run the MCP test suite against servers from the manifests")
    ts.add_argument("names", nargs="*", metavar="NAME", help="servers to test (default: every server)")
    _opt(ts, "--junit", metavar="FILE", help="write JUnit XML here")
    _opt(ts, "--force", action="store_true", help="exit 0 even when tests fail")
    im = add("import", "convert a foreign MCP config into YAML manifests", manifests=False, state=False)
    im.add_argument("import_file", metavar="FILE", help="the config to convert")
    _opt(im, "-d", "--dir", dest="import_dir", metavar="DIR", help="write NAME.yaml files here (default: stdout)")
    _opt(im, "--overwrite", action="store_true", help="replace existing NAME.yaml files")
    _opt(im, "--take-over", action="store_true", help="with -d: replace the imported entries in FILE by managed "
         "ones (endpoint URL or connect), so no server runs twice; FILE.mcpr-backup keeps the old file")
    _opt(im, "--client", metavar="NAME", help="with --take-over: the client FILE belongs to (default: from its path)")
    _state_flag(im)
    add("stop-all", "stop every runner of the state dir (installs are kept)", manifests=False)
    rk = add("render", "the manifests as Kubernetes objects (Deployment, Service, ConfigMap per server)",
             state=False)
    rk.add_argument("render_target", choices=("kubernetes",), metavar="kubernetes", help="the target (kubernetes)")
    _opt(rk, "--namespace", metavar="NS", help="namespace of every object (default: default)")
    _opt(rk, "--image", metavar="IMAGE", help="the mcp-reconcile image (default: the release built from "
         "deploy/Containerfile)")
    _opt(rk, "-o", "--output-dir", dest="render_dir", metavar="DIR", help="one NAME.yaml per server here "
         "(default: stdout)")
    _clients_flags(add("clients", CLIENTS_HELP, output=True))
    sub.add_parser("runner", help="(internal) the per-server shim", add_help=False)
    sub.add_parser("serve", help="one installed server behind its runner, in the foreground (a container's "
                   "command; `serve --help`)", add_help=False)
    sub.add_parser("probe", help="one MCP health probe of an endpoint URL (a Kubernetes exec probe)", add_help=False)
    sub.add_parser("connect", help="a stdio bridge to a server's endpoint, for clients that launch stdio servers "
                   "(`connect NAME --help`)", add_help=False)
    return parser


def parse(argv: Sequence[str]) -> Options:
    argv = list(argv)
    if argv[:1] == ["runner"]:
        return Options(command="runner", names=argv[1:])
    if argv[:1] in (["serve"], ["probe"]):   # parsed by serve.main / probecmd.main (lean: probes run often)
        return Options(command=argv[0], names=argv[1:])
    if argv[:1] == ["clients"]:
        return _parse_clients(argv[1:])
    if argv[:1] == ["connect"]:   # parsed by connect.main: a client launches it per session, it must start fast
        return Options(command="connect", names=argv[1:])
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
    if opts.command == "probe":
        from mcp_reconcile import probecmd

        return probecmd.main(opts.names)
    if opts.command == "serve":
        from mcp_reconcile import serve

        return serve.main(opts.names)
    if opts.command == "connect":
        if "ssl" not in sys.modules:   # http.client imports ssl when it can (8 ms) for TLS a loopback bridge never uses
            sys.modules["ssl"] = None  # type: ignore[assignment]
        from mcp_reconcile import connect

        return connect.main(opts.names, default_state_dir=DEFAULT_STATE_DIR)
    from mcp_reconcile import commands

    return commands.dispatch(opts)
