"""Runs every check of SPEC section 8 against one server and assembles its report.

Processes, in order (each stopped before the next starts, so a 2-core box is not crowded):
  1. the session process: startup, then (without an endpoint) communication, contract calls and
     performance over the SDK, then shutdown (stdin close) on that same process;
  2. with an endpoint: communication, contract calls and performance over it instead;
  3. a raw process for concurrency, and another for error handling (which may kill it);
  4. a fresh process for restart;
  5. auth against the endpoint, when there is one with a token.
A failed startup skips the rest unless `force` is set, which runs what can still run.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mcp_reconcile.mcptest import checks_auth, checks_process, checks_session
from mcp_reconcile.mcptest.checks_errors import check_error_handling
from mcp_reconcile.mcptest.checks_raw import HandshakeError, check_concurrency, raw_session
from mcp_reconcile.mcptest.model import (
    CHECK_ORDER,
    COMMUNICATION,
    CONCURRENCY,
    ERROR_HANDLING,
    PERFORMANCE,
    STARTUP,
    CheckResult,
    ServerReport,
    Settings,
    Status,
    SuiteOptions,
    Target,
    settings_for,
)
from mcp_reconcile.mcptest.raw import ServerProcess
from mcp_reconcile.mcptest.sdk import Recorder, Session, run_session, stdio_client
from mcp_reconcile.protocol import endpoint_client

SESSION_CHECKS = (COMMUNICATION, PERFORMANCE)


async def run_suite(target: Target, options: SuiteOptions | None = None) -> ServerReport:
    """Test one server over MCP and report every check; never raises for a misbehaving server."""
    options = options or SuiteOptions()
    with _log_dir(options.log_dir) as log_dir:
        suite = _Suite(target, settings_for(target, options), log_dir)
        await suite.run()
        return suite.report()


@contextlib.contextmanager
def _log_dir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="mcptest-") as tmp:
        yield Path(tmp)


class _Suite:
    def __init__(self, target: Target, settings: Settings, log_dir: Path) -> None:
        self.target = target
        self.settings = settings
        self.log_dir = log_dir
        self.results: dict[str, CheckResult] = {}
        self.era: str | None = None
        self.protocol_version: str | None = None
        self.server_info: dict[str, object] | None = None
        self.session_opened = False

    def add(self, result: CheckResult) -> None:
        self.results[result.name] = result

    def stderr_path(self, phase: str) -> Path:
        return self.log_dir / f"{self.target.server}.{phase}.stderr.log"

    async def run(self) -> None:
        await self._session_process()
        if self.target.endpoint and self.session_opened:
            await self._endpoint_session()
        if self.session_opened or self.settings.force:
            await self._raw_checks()
            self.add(await checks_process.check_restart(self.target.launch, self.settings,
                                                        stderr_path=self.stderr_path("restart")))
        if self.target.endpoint and self.target.token:
            self.add(await checks_auth.check_auth(self.target.endpoint, self.target.token,
                                                  timeout_s=self.settings.request_timeout_s))
        else:
            self.add(checks_auth.skipped())

    async def _session_process(self) -> None:
        """Startup on a fresh process, the session checks over stdio, then shutdown of that process."""
        launch = self.target.launch
        try:
            proc = await ServerProcess.start(launch, stderr_path=self.stderr_path("session"))
        except OSError as exc:
            self.add(checks_process.spawn_failed(STARTUP, launch, exc))
            return

        recorder = Recorder()

        async def body(session: Session) -> None:
            self._opened(proc, session)
            if not self.target.endpoint:
                await self._session_checks(session, recorder)

        try:
            run = await run_session(stdio_client(proc, recorder=recorder),
                                    connect_timeout_s=self.settings.startup_timeout_s, body=body)
            if run.session is None:
                self.add(await checks_process.startup_failed(proc, run, self.settings))
        finally:
            if self.session_opened or self.settings.force:
                self.add(await checks_process.check_shutdown(proc, timeout_s=self.settings.shutdown_timeout_s))
            else:
                await proc.stop(0.0)

    def _opened(self, proc: ServerProcess, session: Session) -> None:
        self.session_opened = True
        self.era, self.protocol_version = session.era, session.protocol_version
        self.server_info = session.server_info
        self.add(checks_process.startup_passed(proc, session))

    async def _session_checks(self, session: Session, recorder: Recorder | None = None) -> None:
        client = session.client
        self.add(await checks_session.check_communication(client, self.settings, recorder=recorder))
        for index, call in enumerate(self.settings.calls):
            self.add(await checks_session.check_call(client, index, call, self.settings))
        self.add(await checks_session.check_performance(client, self.settings, era=session.era))

    async def _endpoint_session(self) -> None:
        """The session checks through the server's endpoint (as clients will reach it)."""
        assert self.target.endpoint is not None
        client = endpoint_client(self.target.endpoint, token=self.target.token)
        run = await run_session(client, connect_timeout_s=self.settings.request_timeout_s,
                                body=self._session_checks)
        if run.session is None:
            for name in SESSION_CHECKS:
                self.add(CheckResult(name, Status.failed, f"expected a session at {self.target.endpoint}; got "
                                     f"{run.error}"))

    async def _raw_checks(self) -> None:
        """Concurrency and error handling, each on a process of its own (error handling may kill it)."""
        settings = self.settings
        for name in (CONCURRENCY, ERROR_HANDLING):
            try:
                proc = await ServerProcess.start(self.target.launch, stderr_path=self.stderr_path(name))
            except OSError as exc:
                self.add(checks_process.spawn_failed(name, self.target.launch, exc))
                continue
            try:
                async with raw_session(proc, era=self.era, protocol_version=self.protocol_version,
                                       timeout_s=settings.startup_timeout_s) as channel:
                    if name == CONCURRENCY:
                        self.add(await check_concurrency(channel, count=settings.concurrency, era=self.era,
                                                         timeout_s=settings.request_timeout_s))
                    else:
                        self.add(await check_error_handling(channel, era=self.era,
                                                            timeout_s=settings.request_timeout_s))
            except HandshakeError as exc:
                self.add(CheckResult(name, Status.failed, f"expected the server to open a session over raw "
                                     f"stdio; got {exc}"))
            except Exception as exc:  # a server's odd answer must fail its check, not end the whole suite
                self.add(CheckResult(name, Status.failed, f"expected well-formed JSON-RPC answers; the check could "
                                     f"not finish on what the server sent: {type(exc).__name__}: {exc}"))
            finally:
                await proc.stop(settings.shutdown_timeout_s)

    def _skip_reason(self, name: str) -> str:
        if not self.session_opened and not self.settings.force:
            return "not run: startup failed (force runs what can still run)"
        if name in SESSION_CHECKS:
            return "not run: no MCP session (startup failed)"
        return "not run"

    def report(self) -> ServerReport:
        checks = [self.results.get(name) or CheckResult(name, Status.skipped, self._skip_reason(name))
                  for name in CHECK_ORDER]
        calls = [self.results[name] for name in self.results if name not in CHECK_ORDER]
        if not calls and not self.session_opened:
            calls = [CheckResult(checks_session.call_check_name(i, call), Status.skipped,
                                 self._skip_reason(COMMUNICATION)) for i, call in enumerate(self.settings.calls)]
        ordered = tuple(checks + calls)
        return ServerReport(self.target.server, self.era, self.protocol_version, ordered,
                            passed=all(c.status is not Status.failed for c in ordered),
                            server_info=self.server_info)

