"""`mcp-reconcile connect NAME`: a stdio MCP server that is NAME's loopback endpoint (SPEC section 7).

Clients that only launch stdio servers (Claude Desktop, ...) launch this, one process per client session.
This module finds the endpoint (the run record, else ports.json; read again before every attempt, so a
changed port or path is followed) and checks the bearer token; stdiobridge.py does the forwarding. stdout is
the protocol and logs go to stderr; the token (read from the bridge's own environment, under the name the run
record gives) appears in neither, nor on a command line.

Stdlib only (import-linter `runner-lean`): a client waits for this process to start, so its imports are its
start-up time (tests/bench/test_bench_connect.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from mcp_reconcile.connecthttp import Target, Unreachable
from mcp_reconcile.errors import StoreError
from mcp_reconcile.stdiobridge import Bridge, say
from mcp_reconcile.store import read_json

# The endpoint path when no run record says otherwise (spec.path's default).
DEFAULT_PATH = "/mcp"


class Locator:
    """Where NAME's endpoint is, read again before every attempt (a port or path may change with a restart):
    the run record's `endpoint` and `token_env`, else ports.json's port and the last known path."""

    def __init__(self, state_root: Path, name: str, environ: Mapping[str, str] = os.environ) -> None:
        self.root, self.name, self._environ = state_root, name, environ
        self.path = DEFAULT_PATH
        self.token_env: str | None = None

    def find(self) -> int | None:
        """The port (and, as a side effect, path and token env) now; None when the state dir has no port."""
        record = read_json(self.root / "run" / f"{self.name}.json") or {}
        port = record.get("port") if isinstance(record.get("port"), int) else None
        endpoint = record.get("endpoint")
        if isinstance(endpoint, str):   # a serving runner's record: its address and token are current
            parts = urlsplit(endpoint)
            port, self.path = parts.port or port, parts.path or self.path
            self.token_env = record.get("token_env") if isinstance(record.get("token_env"), str) else None
        if port is None:
            ports = read_json(self.root / "ports.json") or {}
            port = ports.get(self.name) if isinstance(ports, dict) and isinstance(ports.get(self.name), int) else None
        return port

    def __call__(self) -> Target:
        try:
            port = self.find()
        except StoreError as exc:
            raise Unreachable(str(exc)) from None
        if port is None:
            raise Unreachable(f"the state dir {self.root} has no port for {self.name!r} any more")
        token = self._environ.get(self.token_env) if self.token_env else None
        return Target(port, self.path, token or None, self.token_env)


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 1, as everywhere in mcp-reconcile."""

    def error(self, message: str):  # type: ignore[no-untyped-def]
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def main(argv: Sequence[str], *, default_state_dir: str) -> int:
    parser = _Parser(prog="mcp-reconcile connect",
                     description="A stdio MCP server that forwards to a server's loopback endpoint "
                                 "(for clients that only launch stdio servers); survives server restarts.")
    parser.add_argument("name", metavar="NAME", help="the server (metadata.name)")
    parser.add_argument("--state-dir", default=None, help="state directory (default: $MCP_RECONCILE_STATE_DIR "
                        f"or ./{default_state_dir})")
    args = parser.parse_args(list(argv))
    root = Path(args.state_dir or os.environ.get("MCP_RECONCILE_STATE_DIR") or default_state_dir).absolute()
    locator = Locator(root, args.name)
    try:
        port = locator.find()
    except StoreError as exc:
        say(args.name, str(exc))
        return 1
    if port is None:
        say(args.name, f"no server named {args.name!r} in the state dir {root} (no port in ports.json, no run "
                       "record): apply a manifest that declares it, or pass --state-dir")
        return 1
    if locator.token_env and not os.environ.get(locator.token_env):
        say(args.name, f"the endpoint of {args.name!r} requires a bearer token: set {locator.token_env} in the "
                       "environment of this command (the client config's env) to the token the manifest gives it")
        return 1
    signal.signal(signal.SIGTERM, _interrupt)   # clients SIGTERM a server that is slow to leave: end the session
    return Bridge(locator, sys.stdout.buffer, name=args.name).run(sys.stdin.buffer)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
