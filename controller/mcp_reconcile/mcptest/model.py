"""What the test framework takes and gives: targets, options, settings, check results, reports.

Plain frozen dataclasses, no I/O, so reports can be built and rendered in unit tests.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from mcp_reconcile.model import LaunchSpec, ServerSpec

# Defaults of the manifest's `tests` block (SPEC section 3 and 8).
DEFAULT_REQUESTS = 100
DEFAULT_P95_MS = 100.0
DEFAULT_MIN_SUCCESS_RATE = 0.99
DEFAULT_CONCURRENCY = 50
DEFAULT_STARTUP_TIMEOUT_S = 60.0
# Bound on one request (a call, a list, a liveness probe) once the server is up.
DEFAULT_REQUEST_TIMEOUT_S = 10.0
# Bound between stdin close and exit before the shutdown check fails (SPEC section 6 stopTimeout).
DEFAULT_SHUTDOWN_TIMEOUT_S = 5.0

# Names of the checks, in report order (SPEC section 8). Contract calls follow as `call[i] TOOL`.
STARTUP = "startup"
COMMUNICATION = "communication"
ERROR_HANDLING = "error_handling"
PERFORMANCE = "performance"
CONCURRENCY = "concurrency"
SHUTDOWN = "shutdown"
RESTART = "restart"
AUTH = "auth"
CHECK_ORDER = (STARTUP, COMMUNICATION, ERROR_HANDLING, PERFORMANCE, CONCURRENCY, SHUTDOWN, RESTART, AUTH)

HANDSHAKE = "handshake"
STATELESS = "stateless"


class Status(enum.Enum):
    """Outcome of one check; only `fail` makes a server's report fail."""

    passed = "pass"
    failed = "fail"
    warned = "warn"
    skipped = "skip"


_SEVERITY = {Status.skipped: 0, Status.passed: 1, Status.warned: 2, Status.failed: 3}


def worst(*statuses: Status) -> Status:
    """The most severe status of several parts of one check (fail > warn > pass > skip)."""
    return max(statuses, key=_SEVERITY.__getitem__, default=Status.skipped)


@dataclass(frozen=True)
class CheckResult:
    """One check: the message says what was expected and what happened."""

    name: str
    status: Status
    message: str
    duration_ms: float = 0.0
    details: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class ServerReport:
    server: str
    era: str | None
    protocol_version: str | None
    checks: tuple[CheckResult, ...]
    passed: bool
    server_info: Mapping[str, Any] | None = None

    @classmethod
    def not_started(cls, server: str, reason: str) -> ServerReport:
        """The report of a server the suite could not even start (not installable, no launch command)."""
        checks = [CheckResult(STARTUP, Status.failed, f"expected the server to be ready to test; {reason}")]
        checks += [CheckResult(name, Status.skipped, "not run: startup failed") for name in CHECK_ORDER[1:]]
        return cls(server, None, None, tuple(checks), passed=False)

    def check(self, name: str) -> CheckResult:
        """The result of the check called `name` (KeyError when it did not run)."""
        for result in self.checks:
            if result.name == name:
                return result
        raise KeyError(name)


@dataclass(frozen=True)
class Target:
    """A server to test: how to spawn it over stdio, and optionally where it is already served.

    `tests` is the manifest's `tests` block as written (camelCase keys). With an `endpoint`, the
    checks that need no process of their own (communication, performance, contract calls) go
    through it, and `token` enables the auth check.
    """

    server: str
    launch: LaunchSpec
    tests: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    endpoint: str | None = None
    token: str | None = None
    stop_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S

    @classmethod
    def from_spec(cls, spec: ServerSpec, launch: LaunchSpec, *, endpoint: str | None = None,
                  token: str | None = None) -> Target:
        """The target for a manifest's server; the token defaults to its endpoint's (`spec.endpointAuth`)."""
        return cls(spec.name, launch, spec.tests.raw, endpoint=endpoint,
                   token=token if token is not None else spec.endpoint_token, stop_timeout_s=spec.stop_timeout_s)


@dataclass(frozen=True)
class SuiteOptions:
    """How to run the suite; every `None` falls back to the manifest's value, then the default.

    `force` keeps going past a failed startup and runs the checks that own a process of their own.
    `log_dir` receives each spawned server's stderr (a temporary directory when None).
    """

    force: bool = False
    requests: int | None = None
    p95_ms: float | None = None
    min_success_rate: float | None = None
    concurrency: int | None = None
    startup_timeout_s: float | None = None
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    shutdown_timeout_s: float | None = None
    log_dir: Path | None = None


@dataclass(frozen=True)
class ContractCall:
    tool: str
    arguments: Mapping[str, Any]
    expect: Mapping[str, Any]


@dataclass(frozen=True)
class Settings:
    """The effective numbers for one run: options over the manifest over the defaults."""

    requests: int
    p95_ms: float
    min_success_rate: float
    concurrency: int
    startup_timeout_s: float
    request_timeout_s: float
    shutdown_timeout_s: float
    expect_tools: tuple[str, ...]
    calls: tuple[ContractCall, ...]
    force: bool


def _pick(option: Any, manifest: Any, default: Any) -> Any:
    if option is not None:
        return option
    return manifest if manifest is not None else default


def settings_for(target: Target, options: SuiteOptions) -> Settings:
    """Merge the suite options, the manifest's `tests` block and the defaults."""
    tests = target.tests or {}
    perf = tests.get("performance") or {}
    calls = tuple(ContractCall(str(c["tool"]), dict(c.get("arguments") or {}), dict(c.get("expect") or {}))
                  for c in tests.get("calls") or ())
    return Settings(
        requests=int(_pick(options.requests, perf.get("requests"), DEFAULT_REQUESTS)),
        p95_ms=float(_pick(options.p95_ms, perf.get("p95Ms"), DEFAULT_P95_MS)),
        min_success_rate=float(_pick(options.min_success_rate, perf.get("minSuccessRate"),
                                     DEFAULT_MIN_SUCCESS_RATE)),
        concurrency=int(_pick(options.concurrency, tests.get("concurrency"), DEFAULT_CONCURRENCY)),
        startup_timeout_s=float(_pick(options.startup_timeout_s, tests.get("startupTimeoutSeconds"),
                                      DEFAULT_STARTUP_TIMEOUT_S)),
        request_timeout_s=options.request_timeout_s,
        shutdown_timeout_s=float(_pick(options.shutdown_timeout_s, None, target.stop_timeout_s)),
        expect_tools=tuple(str(t) for t in tests.get("expectTools") or ()),
        calls=calls,
        force=options.force,
    )
