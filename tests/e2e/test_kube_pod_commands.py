"""The commands `render kubernetes` puts in a pod, run here as the kubelet would run them (no cluster needed):
the init container's `apply --install`, the container's `serve` (which becomes the runner), and the exec
probe `mcp-reconcile probe`; then the Host names of the Service are accepted and a foreign one is not."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys

import pytest
import yaml

from mcp_reconcile.kube import CONTAINER_PORT, MANIFEST_MOUNT, STATE_MOUNT

pytestmark = pytest.mark.e2e

PROBE_TIMEOUT_S = 10.0
EXIT_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_initialize(port: int, host: str) -> int:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                       "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                  "clientInfo": {"name": "kube-test", "version": "1"}}})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_TIMEOUT_S)
    try:
        conn.request("POST", "/mcp", body, {"Host": f"{host}:{port}", "Content-Type": "application/json",
                                             "Accept": "application/json, text/event-stream"})
        return conn.getresponse().status
    finally:
        conn.close()


def test_the_pod_commands_install_serve_and_probe_the_server(real) -> None:
    rendered = subprocess.run([sys.executable, "-m", "mcp_reconcile", "render", "kubernetes", "--namespace", "tools",
                               "-f", str(real.manifests / "time.yaml")], env=real.env, capture_output=True,
                              text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    config, deployment, _service = yaml.safe_load_all(rendered.stdout)
    etc = real.root / "etc"
    etc.mkdir()
    (etc / "time.yaml").write_text(config["data"]["time.yaml"])
    pod = deployment["spec"]["template"]["spec"]
    port = free_port()

    def local(argv: list[str]) -> list[str]:
        """The pod's argv on this host: its mounts under the test's dirs, loopback instead of 0.0.0.0."""
        swap = {MANIFEST_MOUNT: str(etc), STATE_MOUNT: str(real.state_dir), f":{CONTAINER_PORT}/": f":{port}/"}
        out = []
        for arg in argv:
            for mount, here in swap.items():
                arg = arg.replace(mount, here)
            out.append({"0.0.0.0": "127.0.0.1", str(CONTAINER_PORT): str(port)}.get(arg, arg))
        assert out[0] == "mcp-reconcile"
        return [sys.executable, "-m", "mcp_reconcile", *out[1:]]

    install = subprocess.run(local(pod["initContainers"][0]["command"]), env=real.env, capture_output=True,
                             text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr

    container = pod["containers"][0]
    serve = subprocess.Popen(local(container["command"]), env=real.env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        probe = local(container["readinessProbe"]["exec"]["command"])
        ok = real.wait_until(lambda: subprocess.run(probe, env=real.env, capture_output=True, text=True, timeout=30),
                             lambda done: done.returncode == 0, what="the readiness probe command to pass")
        assert ok.stdout.startswith("ok: ")
        record = real.run_record("time")
        assert record["runner_pid"] == serve.pid, "serve must exec the runner (the container's main process)"
        assert post_initialize(port, "time.tools.svc.cluster.local") == 200
        assert post_initialize(port, "time.tools") == 200
        assert post_initialize(port, "evil.example") == 403
    finally:
        serve.send_signal(signal.SIGTERM)
        code = serve.wait(EXIT_TIMEOUT_S)
    assert code == 0, serve.stderr.read() if serve.stderr else ""
    failed = subprocess.run(probe, env=real.env, capture_output=True, text=True, timeout=30)
    assert failed.returncode == 1 and failed.stderr.startswith("probe failed: ")
    real.state_dir.joinpath("run", "time.json").unlink(missing_ok=True)   # a new pod would start afresh
