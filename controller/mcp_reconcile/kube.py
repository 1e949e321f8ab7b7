"""`mcp-reconcile render kubernetes`: the manifests as plain Kubernetes objects (SPEC section 12).

Per MCPServer with desiredState running, four objects and no cluster of our own:

  ConfigMap NAME-mcp-manifest   the server's manifest, source/command/args/path only (no env, so no secret)
  Deployment NAME               init container `apply --install` fills an emptyDir state dir; the container
                                `serve NAME` execs the runner (0.0.0.0:8080, Host names of the Service
                                allowed); exec probes `mcp-reconcile probe` ask the server over MCP
  Service NAME                  port 8080 -> the runner's endpoint
  (Secret NAME-mcp-secrets)     named, never written: every secret env entry is a secretKeyRef to it, and
                                the `kubectl create secret generic` line to fill it goes to stderr

Rendering reads specs only: no state dir, no network, no process. The values of secrets never reach the
output: a secret entry contributes its key, never its value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from mcp_reconcile import __version__
from mcp_reconcile.model import API_VERSION, KIND, DesiredState, ServerSpec

# The image built from deploy/Containerfile (controller, runner, Node.js and uv); --image overrides it.
DEFAULT_IMAGE = f"ghcr.io/mcp-reconcile/mcp-reconcile:{__version__}"
DEFAULT_NAMESPACE = "default"
CONTAINER_PORT = 8080
STATE_MOUNT = "/var/lib/mcp-reconcile"
MANIFEST_MOUNT = "/etc/mcp-reconcile"
TMP_MOUNT = "/tmp"
RUN_AS_UID = 10001   # the image's `mcp` user (deploy/Containerfile)
# A cold `npx` or venv start can take a while: the startup probe allows this long before liveness counts.
STARTUP_PROBE_PERIOD_S = 2
STARTUP_PROBE_FAILURES = 60
# Writable places the package managers and servers need, all under the /tmp emptyDir (root is read-only).
TOOL_ENV = {"HOME": TMP_MOUNT, "npm_config_cache": f"{TMP_MOUNT}/npm-cache",
            "UV_CACHE_DIR": f"{TMP_MOUNT}/uv-cache", "XDG_CACHE_HOME": f"{TMP_MOUNT}/cache"}
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
SELECTOR_LABEL = "mcp-reconcile.io/server"


@dataclass
class Rendered:
    """Objects per server (in order), the comment above each server's objects, and notes for stderr."""

    objects: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    comments: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    secret_commands: list[str] = field(default_factory=list)


def secret_name(server: str) -> str:
    return f"{server}-mcp-secrets"


def service_name(server: str) -> str:
    """A Service name must start with a letter (DNS-1035); server names may start with a digit."""
    return server if server[:1].isalpha() else f"mcp-{server}"[:63].rstrip("-")


def labels_for(spec: ServerSpec, warnings: list[str]) -> dict[str, str]:
    """metadata.labels that Kubernetes accepts (others are dropped with a warning) plus our own."""
    labels: dict[str, str] = {}
    for key, value in spec.labels.items():
        if _LABEL_KEY.match(key) and len(value) <= 63 and _LABEL_VALUE.match(value):
            labels[key] = value
        else:
            warnings.append(f"{spec.name}: label {key}={value!r} is not a valid Kubernetes label; left out")
    return {**labels, "app.kubernetes.io/name": spec.name, "app.kubernetes.io/component": "mcp-server",
            "app.kubernetes.io/managed-by": "mcp-reconcile", SELECTOR_LABEL: spec.name}


def manifest_doc(spec: ServerSpec) -> dict[str, Any]:
    """What the pod needs to install and launch the server: no env (it comes from the container's env)."""
    spec_doc: dict[str, Any] = {"source": {spec.source.kind: spec.source.ref}}
    if spec.command:
        spec_doc["command"] = list(spec.command)
    if spec.args:
        spec_doc["args"] = list(spec.args)
    spec_doc["path"] = spec.path
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": spec.name}, "spec": spec_doc}


def container_env(spec: ServerSpec) -> list[dict[str, Any]]:
    """Plain values as they are; every secret (`${VAR}`, envFile, secretEnv, the endpoint token) as a
    secretKeyRef by key: its value is never read here."""
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in TOOL_ENV.items()]
    for key in sorted(spec.env):
        if key in spec.secret_keys or key == spec.token_env:
            env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": secret_name(spec.name), "key": key}}})
        else:
            env.append({"name": key, "value": spec.env[key]})
    return env


def secret_keys(spec: ServerSpec) -> list[str]:
    return sorted(k for k in spec.env if k in spec.secret_keys or k == spec.token_env)


def _probe(spec: ServerSpec, **timing: int) -> dict[str, Any]:
    command = ["mcp-reconcile", "probe", f"http://127.0.0.1:{CONTAINER_PORT}{spec.path}",
               "--timeout", f"{spec.health.timeout_s:g}"]
    if spec.token_env:
        command += ["--token-env", spec.token_env]
    # the kubelet's own timeout is a little longer than the probe's, so the probe reports its own reason
    return {"exec": {"command": command}, "timeoutSeconds": int(spec.health.timeout_s) + 2, **timing}


def _security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def deployment(spec: ServerSpec, *, namespace: str, image: str, labels: dict[str, str]) -> dict[str, Any]:
    manifest_file = f"{MANIFEST_MOUNT}/{spec.name}.yaml"
    svc = service_name(spec.name)
    hosts = [svc, f"{svc}.{namespace}", f"{svc}.{namespace}.svc", f"{svc}.{namespace}.svc.cluster.local"]
    serve = ["mcp-reconcile", "serve", spec.name, "-f", manifest_file, "--state-dir", STATE_MOUNT,
             "--host", "0.0.0.0", "--port", str(CONTAINER_PORT), "--stop-timeout", f"{spec.stop_timeout_s:g}",
             *(a for h in hosts for a in ("--allow-host", h)),
             *(a for k in sorted(spec.secret_keys) for a in ("--secret-env", k)),
             *(("--token-env", spec.token_env) if spec.token_env else ())]
    mounts = [{"name": "state", "mountPath": STATE_MOUNT}, {"name": "tmp", "mountPath": TMP_MOUNT},
              {"name": "manifest", "mountPath": MANIFEST_MOUNT, "readOnly": True}]
    period = max(1, int(spec.health.interval_s))
    install = {"name": "install", "image": image, "securityContext": _security(), "volumeMounts": mounts,
               "command": ["mcp-reconcile", "apply", "--install", "-f", manifest_file, "--state-dir", STATE_MOUNT],
               "env": [{"name": k, "value": v} for k, v in TOOL_ENV.items()]}
    server = {
        "name": "server", "image": image, "command": serve, "env": container_env(spec),
        "ports": [{"name": "mcp", "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
        "startupProbe": _probe(spec, periodSeconds=STARTUP_PROBE_PERIOD_S, failureThreshold=STARTUP_PROBE_FAILURES),
        "readinessProbe": _probe(spec, periodSeconds=period, failureThreshold=1),
        "livenessProbe": _probe(spec, periodSeconds=period, failureThreshold=max(1, spec.health.failure_threshold)),
        "securityContext": _security(), "volumeMounts": mounts,
        **({"resources": {k: dict(v) for k, v in spec.resources.items()}} if spec.resources else {}),
        # the runner's stop sequence (stdin, SIGTERM, SIGKILL) fits in the pod's grace period
    }
    pod_security = {"runAsNonRoot": True, "runAsUser": RUN_AS_UID, "runAsGroup": RUN_AS_UID, "fsGroup": RUN_AS_UID,
                    "seccompProfile": {"type": "RuntimeDefault"}}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": spec.name, "namespace": namespace, "labels": labels},
        "spec": {
            # one replica: a runner keeps its clients' sessions in its own state dir
            "replicas": 1, "selector": {"matchLabels": {SELECTOR_LABEL: spec.name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"automountServiceAccountToken": False, "securityContext": pod_security,
                         "terminationGracePeriodSeconds": int(spec.stop_timeout_s * 2) + 10,
                         "initContainers": [install], "containers": [server],
                         "volumes": [{"name": "state", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}},
                                     {"name": "manifest", "configMap": {"name": f"{spec.name}-mcp-manifest"}}]},
            },
        },
    }


def render_server(spec: ServerSpec, *, namespace: str, image: str, rendered: Rendered) -> None:
    labels = labels_for(spec, rendered.warnings)
    comments = [f"MCPServer {spec.name} from {spec.origin}"]
    if spec.depends_on:
        note = (f"dependsOn {', '.join(spec.depends_on)}: Kubernetes starts these Deployments independently, "
                "in no order; the server must cope with its dependencies being absent for a while")
        comments.append(note)
        rendered.warnings.append(f"{spec.name}: {note}")
    if not spec.token_env:
        note = ("no spec.endpointAuth: in the cluster the endpoint listens on 0.0.0.0 and the Host check is not "
                "authentication, so any pod that reaches the Service can call its tools; set spec.endpointAuth or "
                "restrict the Service with a NetworkPolicy")
        comments.append(note)
        rendered.warnings.append(f"{spec.name}: {note}")
    config = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": f"{spec.name}-mcp-manifest", "namespace": namespace, "labels": labels},
              "data": {f"{spec.name}.yaml": yaml.safe_dump(manifest_doc(spec), sort_keys=False)}}
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": service_name(spec.name), "namespace": namespace, "labels": labels},
               "spec": {"selector": {SELECTOR_LABEL: spec.name},
                        "ports": [{"name": "mcp", "port": CONTAINER_PORT, "targetPort": "mcp", "protocol": "TCP"}]}}
    keys = secret_keys(spec)
    if keys:
        comments.append(f"needs Secret {secret_name(spec.name)} with keys {', '.join(keys)} (not rendered)")
        literals = " ".join(f"--from-literal={k}=..." for k in keys)
        rendered.secret_commands.append(
            f"kubectl create secret generic {secret_name(spec.name)} --namespace {namespace} {literals}")
    rendered.objects[spec.name] = [config, deployment(spec, namespace=namespace, image=image, labels=labels), service]
    rendered.comments[spec.name] = comments


def render_kubernetes(specs: list[ServerSpec], *, namespace: str = DEFAULT_NAMESPACE,
                      image: str = DEFAULT_IMAGE) -> Rendered:
    rendered = Rendered()
    for spec in sorted(specs, key=lambda s: s.name):
        if spec.desired_state is not DesiredState.running:
            rendered.warnings.append(f"{spec.name}: desiredState {spec.desired_state.value}: not rendered")
        elif spec.source.kind == "path":
            rendered.warnings.append(f"{spec.name}: a path source ({spec.source.ref}) is a file on this host, not "
                                     "in the image: not rendered (build it into an image FROM the mcp-reconcile one)")
        elif spec.transport != "stdio":
            rendered.warnings.append(f"{spec.name}: transport {spec.transport}: not rendered (stdio only)")
        else:
            render_server(spec, namespace=namespace, image=image, rendered=rendered)
    return rendered


class _Dumper(yaml.SafeDumper):
    """Plain YAML for kubectl and people: no anchors/aliases, multi-line strings (the ConfigMap) as blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def to_yaml(rendered: Rendered, names: list[str] | None = None) -> str:
    """The objects of `names` (default: all) as one multi-document YAML stream, comments first."""
    parts = []
    for name in names if names is not None else list(rendered.objects):
        head = "".join(f"# {line}\n" for line in rendered.comments.get(name, []))
        for i, obj in enumerate(rendered.objects[name]):
            parts.append((head if i == 0 else "") + yaml.dump(obj, Dumper=_Dumper, sort_keys=False))
    return "---\n".join(parts)


def run_render(opts: Any) -> int:
    """The command: load (unset ${VAR}s are fine: no value is rendered), render, write, note on stderr."""
    import sys
    from pathlib import Path

    from mcp_reconcile.manifest import load_manifests
    from mcp_reconcile.render import problems_text

    load = load_manifests(opts.manifest_paths(), unset_vars_ok=True)
    problems = load.problems
    for client in getattr(load, "clients", []):
        print(f"note: {client.origin}: MCPClient {client.name} configures an agent on a host: skipped",
              file=sys.stderr)
    if problems:
        print(problems_text(problems), file=sys.stderr)
        return 1
    rendered = render_kubernetes(load.specs, namespace=opts.namespace or DEFAULT_NAMESPACE,
                                 image=opts.image or DEFAULT_IMAGE)
    for w in rendered.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if opts.render_dir:
        out = Path(opts.render_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name in rendered.objects:
            (out / f"{name}.yaml").write_text(to_yaml(rendered, [name]))
            print(f"wrote {out / f'{name}.yaml'}", file=sys.stderr)
    else:
        sys.stdout.write(to_yaml(rendered))
    for line in rendered.secret_commands:
        print(f"create the Secret first: {line}", file=sys.stderr)
    return 0
