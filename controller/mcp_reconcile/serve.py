"""`mcp-reconcile serve NAME`: one installed server behind its runner, in the foreground (a container's command).

The controller starts runners in sessions of their own and supervises them; in a Kubernetes pod the kubelet
supervises, so this command replaces itself (exec) with the runner of one server: the runner is the
container's main process, the server its child, and a crash ends the container for the kubelet to restart.
The install comes first, from `apply --install` in an init container (kube.py renders both).

Flags this command does not know (--host, --port, --path, --allow-host, --secret-env, --token-env, ...) go
to the runner as they are; see `python -m mcp_reconcile.runner --help`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from mcp_reconcile import install
from mcp_reconcile.manifest import load_manifests
from mcp_reconcile.render import problems_text
from mcp_reconcile.scrub import SECRET_PARTS_ENV
from mcp_reconcile.store import StateDir

EXIT_USAGE = 1


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="mcp-reconcile serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="the server (metadata.name)")
    parser.add_argument("-f", "--filename", dest="manifests", action="append", required=True, metavar="PATH")
    parser.add_argument("--state-dir", default=os.environ.get("MCP_RECONCILE_STATE_DIR", ".mcp-reconcile"))
    return parser.parse_known_args(argv)


def runner_argv(argv: Sequence[str]) -> tuple[list[str], dict[str, str]] | str:
    """The runner's command line and environment for the named server, or why there is none."""
    args, passthrough = parse_args(argv)
    load = load_manifests(args.manifests)
    if load.problems:
        return problems_text(load.problems)
    spec = load.by_name.get(args.name)
    if spec is None:
        return f"no server {args.name!r} in {', '.join(args.manifests)}"
    state = StateDir(args.state_dir)
    record = state.read_install(spec.name)
    if not record:
        return (f"{spec.name} is not installed in {state.root}: run `mcp-reconcile apply --install -f ... "
                f"--state-dir {state.root}` first (the init container does)")
    launch = install.launch_spec(spec, record, os.environ)
    state.ensure()
    argv_out = [sys.executable, "-m", "mcp_reconcile.runner", "--state-dir", str(state.root), "--name", spec.name,
                "--generation", spec.runtime_generation, "--path", spec.path, *passthrough, "--", *launch.argv]
    env = dict(launch.env)
    if spec.secret_parts:   # `Bearer ${TOK}`: the runner scrubs TOK's value from the server's log too
        env[SECRET_PARTS_ENV] = json.dumps(sorted(spec.secret_parts))
    return argv_out, env


def main(argv: Sequence[str] | None = None) -> int:
    found = runner_argv(sys.argv[1:] if argv is None else argv)
    if isinstance(found, str):
        print(f"error: serve: {found}", file=sys.stderr)
        return EXIT_USAGE
    command, env = found
    os.execve(command[0], command, env)   # the runner takes this process over (no return)
