"""`mcp-reconcile render kubernetes`: valid objects (kubernetes-validate, strict, the newest Kubernetes it
ships), one Deployment and one Service per running server, secrets only as secretKeyRef, never their values."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from mcp_reconcile.cli import main

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = kubernetes_validate.latest_version()
SECRET_VALUE = "s3cr3t-value-4c1d"        # set in the environment: must appear nowhere in the output
SECRET_ENV_VALUE = "literal-9e7f-secretenv"   # a plain value declared secret by secretEnv
FILE_SECRET = "from-envfile-77aa"


def render(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["render", "kubernetes", *args])
    out, err = capsys.readouterr()
    return code, out, err


def validated(text: str) -> list[dict]:  # type: ignore[type-arg]
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)   # raises ValidationError with the path
    return docs


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:  # type: ignore[type-arg]
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.fixture
def secret_manifests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WEATHER_KEY", SECRET_VALUE)
    (tmp_path / "weather.env").write_text(f"FILE_TOKEN={FILE_SECRET}\n")
    (tmp_path / "weather.yaml").write_text(f"""\
apiVersion: mcp-reconcile/v1
kind: MCPServer
metadata: {{name: weather, labels: {{team: agents, tier: gold}}}}
spec:
  source: {{npm: "@example/weather-mcp@1.2.3"}}
  args: [stdio]
  env:
    API_KEY: ${{WEATHER_KEY}}
    UNITS: metric
    PLAIN_BUT_SECRET: {SECRET_ENV_VALUE}
  secretEnv: [PLAIN_BUT_SECRET]
  envFile: weather.env
  dependsOn: [time]
  health: {{intervalSeconds: 15, timeoutSeconds: 4, failureThreshold: 5}}
---
apiVersion: mcp-reconcile/v1
kind: MCPServer
metadata: {{name: time}}
spec:
  source: {{pypi: "mcp-server-time==2026.10.19"}}
---
apiVersion: mcp-reconcile/v1
kind: MCPServer
metadata: {{name: parked}}
spec:
  source: {{pypi: "mcp-server-time==2026.10.19"}}
  desiredState: stopped
""")
    return tmp_path


def test_the_bundled_manifests_render_a_valid_deployment_and_service_per_running_server(capsys) -> None:
    code, out, err = render(capsys, "-f", str(REPO / "manifests"))
    assert code == 0, err
    docs = validated(out)
    assert set(by_kind(docs, "Deployment")) == {"everything", "time"}
    assert set(by_kind(docs, "Service")) == {"everything", "time"}
    assert set(by_kind(docs, "ConfigMap")) == {"everything-mcp-manifest", "time-mcp-manifest"}
    assert "kubectl create secret" not in err   # the bundled servers need no secret


def test_the_container_runs_the_server_behind_the_runner_with_mcp_probes_and_a_restricted_context(capsys) -> None:
    code, out, _ = render(capsys, "-f", str(REPO / "manifests" / "time.yaml"), "--namespace", "tools",
                          "--image", "registry.example/mcp-reconcile:test")
    assert code == 0
    docs = validated(out)
    deployment = by_kind(docs, "Deployment")["time"]
    pod = deployment["spec"]["template"]["spec"]
    (server,), (install,) = pod["containers"], pod["initContainers"]
    assert server["image"] == install["image"] == "registry.example/mcp-reconcile:test"
    assert server["command"][:3] == ["mcp-reconcile", "serve", "time"]
    assert "--host" in server["command"] and "time.tools.svc.cluster.local" in server["command"]
    assert install["command"][:3] == ["mcp-reconcile", "apply", "--install"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["exec"]["command"][:3] == ["mcp-reconcile", "probe", "http://127.0.0.1:8080/mcp"]
    assert server["livenessProbe"]["periodSeconds"] == 30 and server["livenessProbe"]["failureThreshold"] == 3
    for container in (server, install):
        ctx = container["securityContext"]
        assert ctx["runAsNonRoot"] and ctx["readOnlyRootFilesystem"] and not ctx["allowPrivilegeEscalation"]
        assert ctx["capabilities"]["drop"] == ["ALL"] and ctx["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert {v["name"] for v in pod["volumes"] if "emptyDir" in v} == {"state", "tmp"}
    assert all(d["metadata"]["namespace"] == "tools" for d in docs)
    assert deployment["metadata"]["labels"]["team"] == "examples"
    service = by_kind(docs, "Service")["time"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    manifest = yaml.safe_load(by_kind(docs, "ConfigMap")["time-mcp-manifest"]["data"]["time.yaml"])
    assert manifest["spec"]["source"] == {"pypi": "mcp-server-time==2026.10.19"} and "env" not in manifest["spec"]


def test_secrets_become_secret_key_refs_and_their_values_appear_nowhere(capsys, secret_manifests: Path) -> None:
    code, out, err = render(capsys, "-f", str(secret_manifests))
    assert code == 0, err
    for value in (SECRET_VALUE, SECRET_ENV_VALUE, FILE_SECRET):
        assert value not in out and value not in err
    docs = validated(out)
    assert set(by_kind(docs, "Deployment")) == {"weather", "time"}   # `parked` is stopped: not rendered
    assert set(by_kind(docs, "Service")) == {"weather", "time"}
    env = {e["name"]: e for e in by_kind(docs, "Deployment")["weather"]["spec"]["template"]["spec"]
           ["containers"][0]["env"]}
    for key in ("API_KEY", "PLAIN_BUT_SECRET", "FILE_TOKEN"):
        assert env[key] == {"name": key, "valueFrom": {"secretKeyRef": {"name": "weather-mcp-secrets", "key": key}}}
    assert env["UNITS"] == {"name": "UNITS", "value": "metric"}
    assert not [d for d in docs if d["kind"] == "Secret"]   # named, never filled
    assert ("kubectl create secret generic weather-mcp-secrets --namespace default --from-literal=API_KEY=... "
            "--from-literal=FILE_TOKEN=... --from-literal=PLAIN_BUT_SECRET=...") in err
    assert "--secret-env" in by_kind(docs, "Deployment")["weather"]["spec"]["template"]["spec"]["containers"][0][
        "command"]


def test_depends_on_is_a_warning_and_a_comment_that_kubernetes_starts_them_independently(capsys,
                                                                                          secret_manifests) -> None:
    _, out, err = render(capsys, "-f", str(secret_manifests))
    assert "warning: weather: dependsOn time: Kubernetes starts these Deployments independently" in err
    assert "# dependsOn time: Kubernetes starts these Deployments independently" in out
    assert "warning: parked: desiredState stopped: not rendered" in err


def test_output_dir_gets_one_file_per_server_that_kubectl_kustomize_parses(capsys, tmp_path: Path) -> None:
    out_dir = tmp_path / "k8s"
    code, out, _ = render(capsys, "-f", str(REPO / "manifests"), "-o", str(out_dir))
    assert code == 0 and out == ""
    files = sorted(p.name for p in out_dir.iterdir())
    assert files == ["everything.yaml", "time.yaml"]
    for f in files:
        docs = validated((out_dir / f).read_text())
        assert [d["kind"] for d in docs] == ["ConfigMap", "Deployment", "Service"]
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomize parse was not run (kubernetes-validate was)")
    # `kubectl apply --dry-run=client` still asks a cluster for its API groups; kustomize parses offline
    (out_dir / "kustomization.yaml").write_text(yaml.safe_dump({"resources": files}))
    built = subprocess.run([kubectl, "kustomize", str(out_dir)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(built.stdout))
    assert kinds == ["ConfigMap", "ConfigMap", "Deployment", "Deployment", "Service", "Service"]


def test_a_broken_manifest_is_an_error_naming_the_file_and_nothing_is_rendered(capsys, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("apiVersion: mcp-reconcile/v1\nkind: MCPServer\nmetadata: {name: x}\n"
                                       "spec: {source: {npm: 'a@1'}, desiredState: sometimes}\n")
    code, out, err = render(capsys, "-f", str(tmp_path))
    assert code == 1 and out == ""
    assert "bad.yaml[0] spec.desiredState" in err


def test_the_exec_probe_command_stays_lean_and_fails_with_a_reason(tmp_path: Path) -> None:
    """The kubelet runs it every few seconds per pod: no mcp SDK, YAML, structlog or psutil on its path."""
    import socket
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]   # closed again: nothing listens there
    script = ("import sys\nfrom mcp_reconcile.cli import main\n"
              f"code = main(['probe', 'http://127.0.0.1:{port}/mcp', '--timeout', '2'])\n"
              "heavy = [m for m in ('mcp', 'yaml', 'structlog', 'jsonschema', 'httpx', 'rich', 'psutil') "
              "if m in sys.modules]\n"
              "print(code, heavy)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.stdout.strip() == "1 []", done.stdout + done.stderr
    assert "probe failed: ConnectionRefusedError" in done.stderr


def test_serve_without_an_install_or_for_an_unknown_server_is_a_clear_error(capsys, tmp_path: Path) -> None:
    time_manifest = str(REPO / "manifests" / "time.yaml")
    assert main(["serve", "time", "-f", time_manifest, "--state-dir", str(tmp_path)]) == 1
    assert f"error: serve: time is not installed in {tmp_path}: run `mcp-reconcile apply --install" in \
        capsys.readouterr().err
    assert main(["serve", "nope", "-f", time_manifest, "--state-dir", str(tmp_path)]) == 1
    assert f"error: serve: no server 'nope' in {time_manifest}" in capsys.readouterr().err


def test_an_mcpclient_manifest_is_skipped_with_a_note(capsys, tmp_path: Path) -> None:
    (tmp_path / "cursor.yaml").write_text("apiVersion: mcp-reconcile/v1\nkind: MCPClient\nmetadata: {name: my-cursor}\n"
                                          "spec: {client: cursor}\n")
    code, out, err = render(capsys, "-f", str(tmp_path), "-f", str(REPO / "manifests" / "time.yaml"))
    assert code == 0, err
    assert "MCPClient my-cursor configures an agent on a host: skipped" in err
    assert set(by_kind(validated(out), "Deployment")) == {"time"}


def test_resources_from_the_manifest_reach_the_container_and_a_bad_quantity_is_a_problem(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    manifest = tmp_path / "sized.yaml"
    manifest.write_text("apiVersion: mcp-reconcile/v1\nkind: MCPServer\nmetadata: {name: sized}\nspec:\n"
                        "  source: {pypi: \"mcp-server-time==2026.10.19\"}\n"
                        "  resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {memory: 256Mi}}\n")
    code, out, _ = render(capsys, "-f", str(manifest))
    assert code == 0
    container = by_kind(validated(out), "Deployment")["sized"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}
    manifest.write_text(manifest.read_text().replace("64Mi", "lots"))
    code, _, err = render(capsys, "-f", str(manifest))
    assert code == 1 and "spec.resources.requests.memory" in err
