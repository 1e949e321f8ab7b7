"""`mcp-reconcile probe URL`: one MCP health probe of an endpoint, for a Kubernetes exec probe.

Exit 0 when the server answered (`ping` after `initialize`, or `server/discover` on a 2026-07-28 server),
1 otherwise, with the reason on stderr. Lean on purpose, like the runner: the kubelet runs it every few
seconds, so it uses probe.LeanProbe (h11 + stdlib) and never the mcp SDK.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from mcp_reconcile.probe import LeanProbe, ProbeResult

DEFAULT_TIMEOUT_S = 5.0


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mcp-reconcile probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the endpoint, e.g. http://127.0.0.1:8080/mcp")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds (default: %(default)s)")
    parser.add_argument("--token-env", default=None, metavar="NAME",
                        help="env var holding the endpoint's bearer token (spec.endpointAuth.tokenEnv)")
    return parser.parse_args(argv)


async def probe_once(url: str, *, timeout_s: float, token: str | None) -> ProbeResult:
    session = LeanProbe(url, token=token)
    try:
        return await session.probe(timeout_s)
    finally:
        await session.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    token = os.environ.get(args.token_env) if args.token_env else None
    result = asyncio.run(probe_once(args.url, timeout_s=args.timeout, token=token))
    if result.ok:
        print(f"ok: {result.era} era, {result.latency_ms:.1f} ms")
        return 0
    print(f"probe failed: {result.error}", file=sys.stderr)
    return 1
