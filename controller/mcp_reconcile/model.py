"""The data every stage passes along: specs (desired), observations, actions and plans.

Frozen dataclasses and enums only: no disk, network, process or clock here, so the planner that
consumes them stays a pure function.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

API_VERSION = "mcp-reconcile/v1"
KIND = "MCPServer"

# How long a request that reaches a server's endpoint while the server restarts after a crash waits for it.
DEFAULT_HOLD_REQUESTS_S = 30.0
DEFAULT_REQUEST_TIMEOUT_S = 300.0   # a forwarded request with no answer and no progress for this long: 504
DEFAULT_MAX_SESSIONS = 32          # sessions: isolated: server processes per runner at most
DEFAULT_SESSION_IDLE_S = 600.0     # sessions: isolated: a session idle this long ends (its server stops)
# Fields of a spec whose change means the process must be restarted (the source also reinstalls).
# endpointOptions holds only the endpoint settings a manifest sets (holdRequestsSeconds, sessions, ...): a
# default left unset changes no generation, so adding a setting restarts nothing that does not use it.
RUNTIME_FIELDS = ("source", "command", "args", "env", "transport", "port", "path", "cwd", "endpointAuth",
                  "endpointOptions")
INSTALL_FIELDS = ("source",)


class DesiredState(enum.Enum):
    running = "running"
    stopped = "stopped"
    installed = "installed"
    absent = "absent"


class RestartPolicy(enum.Enum):
    Always = "Always"
    OnFailure = "OnFailure"
    Never = "Never"


class ActionKind(enum.Enum):
    """What the controller may do to a server; the value is the spec's spelling."""

    install = "install"
    upgrade = "upgrade"
    start = "start"
    restart = "restart"
    test = "test"
    stop = "stop"
    uninstall = "uninstall"

    @property
    def symbol(self) -> str:
        return _SYMBOLS[self]


_SYMBOLS = {
    ActionKind.install: "+", ActionKind.start: "+", ActionKind.test: "?",
    ActionKind.upgrade: "~", ActionKind.restart: "~",
    ActionKind.stop: "-", ActionKind.uninstall: "-",
}


class Phase(enum.Enum):
    Pending = "Pending"
    Installing = "Installing"
    Starting = "Starting"
    Running = "Running"
    Degraded = "Degraded"
    CrashLoopBackOff = "CrashLoopBackOff"
    Stopped = "Stopped"
    Failed = "Failed"


@dataclass(frozen=True)
class Source:
    """Where a server comes from: exactly one of npm / pypi / path."""

    kind: str  # "npm" | "pypi" | "path"
    ref: str   # "pkg@1.2.3", "pkg==1.2.3" or a file path (absolute once loaded)

    def __str__(self) -> str:
        return f"{self.kind}:{self.ref}"


@dataclass(frozen=True)
class HealthSpec:
    interval_s: float = 30.0
    timeout_s: float = 5.0
    failure_threshold: int = 3


@dataclass(frozen=True)
class BackoffSpec:
    initial_s: float = 1.0
    max_s: float = 60.0
    reset_after_s: float = 120.0


@dataclass(frozen=True)
class TestSpec:
    """The manifest's `tests` block (section 8); `raw` keeps it whole for the test framework."""

    gate: bool = False
    raw: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Origin:
    """Where a spec was declared, for messages."""

    file: str
    doc_index: int = 0

    def __str__(self) -> str:
        return f"{self.file}[{self.doc_index}]"


@dataclass(frozen=True)
class ServerSpec:
    """One server as the manifests want it, after validation and `${VAR}` expansion.

    `secret_keys` names the env entries whose values are secrets; `digests` holds one keyed hash per
    field (env per key, as `env.NAME`) so that plans can say what changed without showing values.
    """

    name: str
    source: Source
    command: tuple[str, ...] | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    secret_keys: frozenset[str] = frozenset()
    env_refs: frozenset[str] = frozenset()   # controller variables its env references as ${VAR}
    secret_parts: frozenset[str] = frozenset()   # the values put in for those ${VAR}s (redacted on their own too)
    token_env: str | None = None   # the env entry holding the endpoint's bearer token (kept from the server)
    transport: str = "stdio"
    port: int | None = None
    path: str = "/mcp"
    cwd: str | None = None
    desired_state: DesiredState = DesiredState.running
    restart_policy: RestartPolicy = RestartPolicy.Always
    restart_backoff: BackoffSpec = BackoffSpec()
    health: HealthSpec = HealthSpec()
    stop_timeout_s: float = 5.0
    hold_requests_s: float = DEFAULT_HOLD_REQUESTS_S   # requests wait this long for a crashed server
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    sessions: str = "shared"       # shared: one server process for all clients; isolated: one per session
    max_sessions: int = DEFAULT_MAX_SESSIONS
    session_idle_s: float = DEFAULT_SESSION_IDLE_S
    # Kubernetes requests/limits (cpu, memory) for `render kubernetes`; no effect on a local run
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: MappingProxyType({}))
    depends_on: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    tests: TestSpec = TestSpec()
    origin: Origin = Origin("<memory>")
    digests: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    generation: str = ""
    runtime_generation: str = ""
    install_generation: str = ""

    def secret_values(self) -> list[str]:
        """Every value to redact: whole secret env entries, and each ${VAR}'s value inside a composed one."""
        whole = [self.env[k] for k in self.secret_keys if self.env.get(k)]
        return list(dict.fromkeys([*whole, *sorted(self.secret_parts)]))

    @property
    def endpoint_token(self) -> str | None:
        """The bearer token clients (probes and tests included) must send to the runner's endpoint."""
        return (self.env.get(self.token_env) or None) if self.token_env else None


@dataclass(frozen=True)
class ObservedServer:
    """What the state dir and the process table say about one server right now."""

    name: str
    installed: bool = False
    install_generation: str | None = None
    install_digests: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    install_source: str | None = None   # the source as installed, e.g. "npm:pkg@1.0.0"
    resolved_version: str | None = None
    running: bool = False              # runner alive and verified (pid + create_time + cmdline)
    stale_run_record: bool = False     # a run record whose pid is gone or belongs to someone else
    stale_reason: str = ""
    runtime_generation: str | None = None
    runtime_digests: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    endpoint: str | None = None
    server_pid: int | None = None
    last_exit_code: int | None = None
    restarts: int = 0
    consecutive_probe_failures: int = 0
    healthy: bool | None = None        # None: not probed yet
    tested_generation: str | None = None
    backoff_until: float | None = None  # monotonic-free: seconds on the controller's clock


@dataclass(frozen=True)
class Observed:
    servers: Mapping[str, ObservedServer] = field(default_factory=lambda: MappingProxyType({}))

    def get(self, name: str) -> ObservedServer:
        return self.servers.get(name) or ObservedServer(name=name)


@dataclass(frozen=True)
class Action:
    """One step of a plan. `wave` orders starts by dependency depth (0 starts first)."""

    kind: ActionKind
    server: str
    reason: str                        # for people (plan output, events); code reads the typed fields
    changed_fields: tuple[str, ...] = ()
    wave: int = 0
    unhealthy: bool = False            # a restart because probes failed: the loop backs it off like a crash


@dataclass(frozen=True)
class Deferred:
    """A server that needs work but must wait (CrashLoopBackOff) until `until` on the plan's clock."""

    server: str
    until: float
    reason: str


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...] = ()
    deferred: tuple[Deferred, ...] = ()

    @property
    def has_changes(self) -> bool:
        return bool(self.actions)

    def count(self, *kinds: ActionKind) -> int:
        return sum(1 for a in self.actions if a.kind in kinds)


@dataclass(frozen=True)
class Condition:
    """Kubernetes-style condition on a server's status."""

    type: str      # Installed | Running | Healthy | Tested | Ready
    status: str    # "True" | "False" | "Unknown"
    reason: str
    message: str = ""   # transition times are kept by readiness.record_status, which sees the previous state


@dataclass(frozen=True)
class LaunchSpec:
    """A resolved way to start a server: what the installer found plus the spec's args and env.

    `env` is the whole environment the server gets; `secret_keys` name the values in it that are secrets
    (scrubbed from its logs).
    """

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    cwd: str | None = None
    secret_keys: frozenset[str] = frozenset()
    secret_parts: frozenset[str] = frozenset()   # ${VAR} values inside composed entries (ServerSpec's)

    def secret_values(self) -> list[str]:
        whole = [value for key in sorted(self.secret_keys) if (value := self.env.get(key))]
        return list(dict.fromkeys([*whole, *sorted(self.secret_parts)]))


# Variables every server inherits even when a manifest references them as ${VAR} (they are no secret,
# and npm, node and Python need them); any other referenced variable reaches only the servers that ask for it.
ALWAYS_INHERITED = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
                              "SHELL", "TERM"})


def env_without(base_env: Mapping[str, str], withheld: set[str] | frozenset[str]) -> dict[str, str]:
    """`base_env` minus the manifests' ${VAR}s: children (servers, package managers) never see another's secret."""
    return {k: v for k, v in base_env.items() if k not in withheld or k in ALWAYS_INHERITED}


def referenced_vars(specs: Iterable[ServerSpec]) -> set[str]:
    """Every variable some manifest references as ${VAR}."""
    return {var for spec in specs for var in spec.env_refs}
