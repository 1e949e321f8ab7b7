"""Installers without network: failure classification, the staging swap, idempotence, retries, path
sources, prerequisites and launch specs. Package managers are replaced by fakes behind proc.run_command."""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from mcp_reconcile import proc
from mcp_reconcile.errors import PermanentError, PrerequisiteError, TransientError
from mcp_reconcile.install import (
    ensure_installed,
    is_current,
    launch_spec,
    new_record,
    prereq,
    pypi,
    uninstall,
)
from mcp_reconcile.install.local import LocalInstaller
from mcp_reconcile.install.npm import NPM_FAILURES, NpmInstaller, split_ref
from mcp_reconcile.install.pypi import PIP_FAILURES, UV_FAILURES, PypiInstaller, project_name
from mcp_reconcile.install.retry import INSTALL_ATTEMPTS, classify_failure, retrying
from mcp_reconcile.model import ServerSpec, Source, env_without
from mcp_reconcile.proc import CommandResult
from mcp_reconcile.store import InstallRecord, StateDir


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# What the installers run package managers with in these tests.
ENV = {"PATH": os.environ.get("PATH", "")}


def npm_spec(name: str = "everything", ref: str = "@modelcontextprotocol/server-everything@2026.8.31", *,
             generation: str = "g1", **kw: object) -> ServerSpec:
    return ServerSpec(name=name, source=Source("npm", ref), install_generation=generation, **kw)  # type: ignore[arg-type]


def path_spec(path: Path | str, *, name: str = "local", **kw: object) -> ServerSpec:
    return ServerSpec(name=name, source=Source("path", str(path)), install_generation="p1", **kw)  # type: ignore[arg-type]


class RecordingSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class FakeInstaller:
    """Writes a marker file into the target and returns a record, or fails after writing junk."""

    kind = "npm"

    def __init__(self, *, fail: Exception | None = None, version: str = "2.0.0") -> None:
        self.fail = fail
        self.version = version
        self.calls: list[Path] = []
        self.envs: list[dict[str, str]] = []

    async def install(self, spec: ServerSpec, target: Path, *, env: Mapping[str, str]) -> InstallRecord:
        self.calls.append(target)
        self.envs.append(dict(env))
        (target / "bin").mkdir()
        (target / "bin" / "server").write_text(self.version)
        if self.fail is not None:
            raise self.fail
        return new_record(spec, target, installer="npm", resolved_version=self.version,
                          command=[str(target / "bin" / "server")])

    def command_for(self, spec: ServerSpec, record: InstallRecord) -> list[str]:
        return list(record["command"])

    def bin_dir(self, record: InstallRecord) -> Path | None:
        return Path(record["dir"]) / "bin"


def fake_result(argv: Sequence[str], *, returncode: int = 0, stderr: str = "") -> CommandResult:
    return CommandResult(tuple(argv), returncode, "", stderr, 0.01)


# --- classification of real-looking package-manager output ---------------------------------------

NPM_ETARGET = """npm error code ETARGET
npm error notarget No matching version found for @modelcontextprotocol/server-everything@9.9.9.
npm error notarget In most cases you or one of your dependencies are requesting
npm error notarget a package version that doesn't exist.
npm error A complete log of this run can be found in: /root/.npm/_logs/2026-11-25T09_08_21_082Z-debug-0.log
"""
NPM_E404 = """npm error code E404
npm error 404 Not Found - GET https://registry.npmjs.org/@modelcontextprotocol%2fserver-does-not-exist-xyz - Not found
npm error 404
npm error 404  The requested resource '@modelcontextprotocol/server-does-not-exist-xyz@1.0.0' could not be found or you do not have permission to access it.
npm error 404
npm error 404 Note that you can also install from a
npm error 404 tarball, folder, http url, or git url.
npm error A complete log of this run can be found in: /root/.npm/_logs/x-debug-0.log
"""  # noqa: E501
NPM_ECONNRESET = """npm error code ECONNRESET
npm error syscall read
npm error errno ECONNRESET
npm error network request to https://registry.npmjs.org/@modelcontextprotocol%2fserver-everything failed, reason: read ECONNRESET
npm error network This is a problem related to network connectivity.
"""  # noqa: E501
NPM_EAI_AGAIN = """npm error code EAI_AGAIN
npm error syscall getaddrinfo
npm error errno EAI_AGAIN
npm error request to https://registry.npmjs.org/left-pad failed, reason: getaddrinfo EAI_AGAIN registry.npmjs.org
"""
NPM_503 = """npm error code E503
npm error 503 Service Unavailable - GET https://registry.npmjs.org/@modelcontextprotocol%2fserver-everything
"""
UV_NO_VERSION = """Using Python 3.11.7 environment at: venv
  \u00d7 No solution found when resolving dependencies:
  ╰─▶ Because there is no version of mcp-server-time==0.0.999 and you require mcp-server-time==0.0.999, we can conclude that your requirements are unsatisfiable.
"""  # noqa: E501
UV_NO_VERSION_PLAIN = """Using Python 3.11.7 environment at: venv
error: No solution found when resolving dependencies
  cause: Because there is no version of mcp-server-time==0.0.999 and you require mcp-server-time==0.0.999, we can conclude that your requirements are unsatisfiable.
"""  # noqa: E501
UV_NOT_IN_REGISTRY = """error: No solution found when resolving dependencies
  cause: Because mcp-server-nope was not found in the package registry and you require mcp-server-nope==1.0, we can conclude that your requirements are unsatisfiable.
"""  # noqa: E501
UV_DNS = """error: Failed to fetch: `https://pypi.org/simple/mcp-server-time/`
  Caused by: Request failed after 3 retries
  Caused by: error sending request for url (https://pypi.org/simple/mcp-server-time/)
  Caused by: client error (Connect)
  Caused by: dns error: failed to lookup address information: Temporary failure in name resolution
"""
UV_502 = """error: Failed to fetch: `https://pypi.org/simple/mcp/`
  Caused by: HTTP status server error (502 Bad Gateway) for url (https://pypi.org/simple/mcp/)
"""
PIP_NO_DIST = """ERROR: Could not find a version that satisfies the requirement mcp-server-time==0.0.999 (from versions: 0.5.0, 2026.10.19)
ERROR: No matching distribution found for mcp-server-time==0.0.999
"""  # noqa: E501
PIP_OFFLINE = """WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object>: Failed to establish a new connection: [Errno -3] Temporary failure in name resolution')': /simple/mcp-server-time/
ERROR: Could not find a version that satisfies the requirement mcp-server-time==2026.10.19 (from versions: none)
ERROR: No matching distribution found for mcp-server-time==2026.10.19
"""  # noqa: E501


@pytest.mark.parametrize(("manager", "output", "package", "ref", "kind", "reason"), [
    pytest.param(NPM_FAILURES, NPM_ETARGET, "@modelcontextprotocol/server-everything",
                 "@modelcontextprotocol/server-everything@9.9.9", PermanentError,
                 "npm: No matching version found for @modelcontextprotocol/server-everything@9.9.9",
                 id="npm ETARGET is permanent with npm's reason line"),
    pytest.param(NPM_FAILURES, NPM_E404, "@modelcontextprotocol/server-does-not-exist-xyz",
                 "@modelcontextprotocol/server-does-not-exist-xyz@1.0.0", PermanentError,
                 "npm: The requested resource '@modelcontextprotocol/server-does-not-exist-xyz@1.0.0' could not be "
                 "found or you do not have permission to access it",
                 id="npm E404 is permanent and names the package"),
    pytest.param(NPM_FAILURES, NPM_ECONNRESET, "@modelcontextprotocol/server-everything", "x", TransientError,
                 None, id="npm ECONNRESET is transient"),
    pytest.param(NPM_FAILURES, NPM_EAI_AGAIN, "left-pad", "left-pad", TransientError, None,
                 id="npm EAI_AGAIN is transient"),
    pytest.param(NPM_FAILURES, NPM_503, "@modelcontextprotocol/server-everything", "x", TransientError, None,
                 id="npm 503 is transient"),
    pytest.param(UV_FAILURES, UV_NO_VERSION_PLAIN, "mcp-server-time", "mcp-server-time==0.0.999", PermanentError,
                 "uv: Because there is no version of mcp-server-time==0.0.999 and you require "
                 "mcp-server-time==0.0.999", id="uv missing version is permanent"),
    pytest.param(UV_FAILURES, UV_NO_VERSION, "mcp-server-time", "mcp-server-time==0.0.999", PermanentError,
                 "uv: Because there is no version of mcp-server-time==0.0.999 and you require "
                 "mcp-server-time==0.0.999", id="uv missing version in fancy output is permanent"),
    pytest.param(UV_FAILURES, UV_NOT_IN_REGISTRY, "mcp-server-nope", "mcp-server-nope==1.0", PermanentError,
                 "uv: Because mcp-server-nope was not found in the package registry and you require "
                 "mcp-server-nope==1.0", id="uv unknown package is permanent"),
    pytest.param(UV_FAILURES, UV_DNS, "mcp-server-time", "mcp-server-time", TransientError, None,
                 id="uv dns failure is transient"),
    pytest.param(UV_FAILURES, UV_502, "mcp-server-time", "mcp-server-time", TransientError, None,
                 id="uv 502 is transient"),
    pytest.param(PIP_FAILURES, PIP_NO_DIST, "mcp-server-time", "mcp-server-time==0.0.999", PermanentError,
                 "pip: No matching distribution found for mcp-server-time==0.0.999", id="pip missing version"),
    pytest.param(PIP_FAILURES, PIP_OFFLINE, "mcp-server-time", "mcp-server-time", TransientError, None,
                 id="pip giving up after connection retries is transient"),
    pytest.param(NPM_FAILURES, "npm error something odd happened\n", "pkg", "pkg@1", TransientError,
                 "npm: exited 1: something odd happened (installing pkg@1)", id="unknown failures are transient"),
])
def test_package_manager_failures_are_classified(manager, output, package, ref, kind, reason) -> None:
    error = classify_failure(output, manager, server="srv", package=package, ref=ref)

    assert type(error) is kind
    assert str(error).startswith("srv: install failed: ")
    if reason is not None:
        assert error.reason == reason


def test_package_refs_are_split_into_name_and_version() -> None:
    assert split_ref("@modelcontextprotocol/server-everything@2026.8.31") == (
        "@modelcontextprotocol/server-everything", "2026.8.31")
    assert split_ref("@scope/pkg") == ("@scope/pkg", None)
    assert split_ref("left-pad@^1") == ("left-pad", "^1")
    assert project_name("s", "mcp-server-time==2026.10.19") == "mcp-server-time"
    assert project_name("s", "mcp_server.git[extra]>=1,<2") == "mcp_server.git"
    assert project_name("s", "pkg @ https://example.org/pkg.whl") == "pkg"
    with pytest.raises(PermanentError, match="cannot tell the project name"):
        project_name("s", "https://example.org/pkg.whl")


# --- ensure_installed: idempotence and the swap ------------------------------------------------------

@pytest.mark.anyio
async def test_a_current_install_runs_no_installer(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    spec = npm_spec()
    first = FakeInstaller()
    record, changed = await ensure_installed(spec, state, installer=first)
    again = FakeInstaller()

    with capture_logs() as events:
        second, changed_again = await ensure_installed(spec, state, installer=again)

    assert changed and not changed_again
    assert again.calls == []
    assert second == state.read_install("everything") == record
    assert [e["event"] for e in events] == ["install.skipped"]


@pytest.mark.anyio
async def test_force_reinstalls_a_current_install(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    await ensure_installed(npm_spec(), state, installer=FakeInstaller())
    again = FakeInstaller(version="2.0.1")

    record, changed = await ensure_installed(npm_spec(), state, force=True, installer=again)

    assert changed and len(again.calls) == 1
    assert record["resolved_version"] == "2.0.1"


@pytest.mark.anyio
async def test_a_successful_install_is_swapped_in_with_paths_of_its_final_place(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    await ensure_installed(npm_spec(generation="g1"), state, installer=FakeInstaller(version="1.0.0"))

    with capture_logs() as events:
        record, changed = await ensure_installed(npm_spec(generation="g2"), state,
                                                 installer=FakeInstaller(version="2.0.0"))

    final = state.install_dir("everything")
    assert changed
    assert record["dir"] == str(final)
    assert record["command"] == [str(final / "bin" / "server")]
    assert Path(record["command"][0]).read_text() == "2.0.0"
    assert state.read_install("everything") == record
    assert record["generation"] == "g2"
    assert sorted(p.name for p in (tmp_path / "installs").iterdir()) == ["everything"]
    assert [e["event"] for e in events] == ["install.started", "install.succeeded"]


@pytest.mark.anyio
async def test_a_failed_upgrade_keeps_the_old_install_and_its_record(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    old, _ = await ensure_installed(npm_spec(generation="g1"), state, installer=FakeInstaller(version="1.0.0"))
    failing = FakeInstaller(fail=PermanentError("everything", "install", "npm: No matching version found"))

    with capture_logs() as events, pytest.raises(PermanentError, match="No matching version"):
        await ensure_installed(npm_spec(generation="g2"), state, installer=failing)

    assert len(failing.calls) == 1
    assert state.read_install("everything") == old
    assert Path(old["command"][0]).read_text() == "1.0.0"
    assert sorted(p.name for p in (tmp_path / "installs").iterdir()) == ["everything"]
    failed = [e for e in events if e["event"] == "install.failed"]
    assert failed and failed[0]["server"] == "everything" and "No matching version" in failed[0]["error"]


@pytest.mark.anyio
async def test_an_interrupted_swap_is_recovered_from_the_aside_copy(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    old, _ = await ensure_installed(npm_spec(), state, installer=FakeInstaller(version="1.0.0"))
    final = state.install_dir("everything")
    final.rename(final.with_name(".everything.old-dead"))  # crash after "old aside", before "new in"
    installer = FakeInstaller()

    record, changed = await ensure_installed(npm_spec(), state, installer=installer)

    assert not changed and installer.calls == []
    assert record == old
    assert sorted(p.name for p in (tmp_path / "installs").iterdir()) == ["everything"]


@pytest.mark.anyio
async def test_uninstall_removes_the_install_and_reports_whether_there_was_one(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    await ensure_installed(npm_spec(), state, installer=FakeInstaller())

    with capture_logs() as events:
        assert await uninstall("everything", state) is True
    assert await uninstall("everything", state) is False

    assert list((tmp_path / "installs").iterdir()) == []
    assert [e["event"] for e in events] == ["uninstall.succeeded"]


def test_is_current_needs_the_same_generation_and_the_install_on_disk(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "server").write_text("")
    record = new_record(npm_spec(generation="g1"), tmp_path, installer="npm", resolved_version="1",
                        command=[str(tmp_path / "bin" / "server")])

    assert is_current(npm_spec(generation="g1"), record)
    assert not is_current(npm_spec(generation="g2"), record)
    assert not is_current(npm_spec(generation="g1"), None)
    (tmp_path / "bin" / "server").unlink()
    assert not is_current(npm_spec(generation="g1"), record)


# --- retries ----------------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_a_transient_error_is_retried_then_succeeds() -> None:
    sleep = RecordingSleep()
    outcomes: list[Exception | None] = [TransientError("s", "install", "npm: read ECONNRESET"), None]

    async def run() -> str:
        failure = outcomes.pop(0)
        if failure is not None:
            raise failure
        return "ok"

    with capture_logs() as events:
        assert await retrying(run, server="s", source="npm:x@1", sleep=sleep) == "ok"

    assert len(sleep.delays) == 1
    retried = [e for e in events if e["event"] == "install.retried"]
    assert [(e["server"], e["attempt"]) for e in retried] == [("s", 1)]
    assert "ECONNRESET" in retried[0]["error"]


@pytest.mark.anyio
async def test_transient_errors_give_up_after_the_attempt_limit_and_permanent_ones_at_once() -> None:
    sleep = RecordingSleep()
    calls: list[int] = []

    async def flaky() -> None:
        calls.append(1)
        raise TransientError("s", "install", "npm: ETIMEDOUT")

    with pytest.raises(TransientError):
        await retrying(flaky, server="s", source="npm:x@1", sleep=sleep)
    assert len(calls) == INSTALL_ATTEMPTS and len(sleep.delays) == INSTALL_ATTEMPTS - 1

    async def missing() -> None:
        calls.append(1)
        raise PermanentError("s", "install", "npm: E404")

    calls.clear()
    with pytest.raises(PermanentError):
        await retrying(missing, server="s", source="npm:x@1", sleep=sleep)
    assert len(calls) == 1


# --- npm and pypi installers over a fake package manager ----------------------------------------------

def _executable(path: Path, text: str = "#!/bin/sh\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


class FakeNpm:
    """Stands in for proc.run_command: fails with the given outputs first, then installs a package."""

    def __init__(self, package: str, *, failures: Sequence[str] = (), bin_field: object = "dist/index.js") -> None:
        self.package, self.failures, self.bin_field = package, list(failures), bin_field
        self.calls: list[tuple[str, ...]] = []
        self.envs: list[object] = []

    async def __call__(self, argv: Sequence[str], **kw: object) -> CommandResult:
        self.calls.append(tuple(argv))
        self.envs.append(kw.get("env"))
        if self.failures:
            return fake_result(argv, returncode=1, stderr=self.failures.pop(0))
        target = Path(argv[argv.index("--prefix") + 1])
        pkg_dir = target / "node_modules" / self.package
        pkg_dir.mkdir(parents=True)
        (pkg_dir / "package.json").write_text(json.dumps({"name": self.package, "version": "2026.8.31",
                                                          "bin": self.bin_field}))
        names = [self.package.rsplit("/", 1)[-1]] if isinstance(self.bin_field, str) else list(self.bin_field)
        for name in names:
            _executable(target / "node_modules" / ".bin" / name)
        return fake_result(argv)


@pytest.mark.anyio
async def test_npm_install_retries_a_connection_reset_and_records_the_resolved_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNpm("@modelcontextprotocol/server-everything", failures=[NPM_ECONNRESET])
    monkeypatch.setattr(proc, "run_command", fake)
    sleep = RecordingSleep()
    spec = npm_spec(ref="@modelcontextprotocol/server-everything")  # unpinned

    record = await NpmInstaller(sleep=sleep, npm="npm").install(spec, tmp_path, env=ENV)

    assert len(fake.calls) == 2 and len(sleep.delays) == 1
    assert fake.calls[0] == ("npm", "install", "--prefix", str(tmp_path), "--no-audit", "--no-fund",
                             "--loglevel=error", "@modelcontextprotocol/server-everything")
    assert record["resolved_version"] == "2026.8.31"
    assert record["command"] == [str(tmp_path / "node_modules" / ".bin" / "server-everything")]


@pytest.mark.anyio
async def test_npm_package_with_several_bins_asks_for_spec_command(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proc, "run_command", FakeNpm("tools", bin_field={"tool-a": "a.js", "tool-b": "b.js"}))

    with pytest.raises(PermanentError, match=r"srv: install failed: tools has several commands "
                                             r"\(tool-a, tool-b\); set spec.command"):
        await NpmInstaller(npm="npm").install(npm_spec("srv", "tools@1"), tmp_path, env=ENV)


@pytest.mark.anyio
async def test_npm_spec_command_is_resolved_in_the_install_bin_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proc, "run_command", FakeNpm("tools", bin_field={"tool-a": "a.js", "tool-b": "b.js"}))

    spec = npm_spec("srv", "tools@1", command=("tool-b", "--stdio"))
    record = await NpmInstaller(npm="npm").install(spec, tmp_path, env=ENV)

    assert record["command"] == []  # the package has no command of its own to fall back to
    assert NpmInstaller().command_for(spec, record) == [str(tmp_path / "node_modules" / ".bin" / "tool-b"),
                                                        "--stdio"]
    with pytest.raises(PermanentError, match=r"srv: start failed: npm:tools@1 has no command of its own"):
        NpmInstaller().command_for(npm_spec("srv", "tools@1"), record)


@pytest.mark.anyio
async def test_dropping_spec_command_runs_the_packages_own_command_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNpm("tool")
    monkeypatch.setattr(proc, "run_command", fake)
    custom = npm_spec("srv", "tool@1", command=("node", "custom.js"))

    record = await NpmInstaller(npm="npm").install(custom, tmp_path, env=ENV)

    package_bin = str(tmp_path / "node_modules" / ".bin" / "tool")
    assert NpmInstaller().command_for(custom, record)[1:] == ["custom.js"]
    assert NpmInstaller().command_for(npm_spec("srv", "tool@1"), record) == [package_bin]


@pytest.mark.anyio
async def test_package_managers_run_with_the_environment_they_are_given(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNpm("tool")
    monkeypatch.setattr(proc, "run_command", fake)
    await NpmInstaller(npm="npm").install(npm_spec("srv", "tool@1"), tmp_path, env={"PATH": "/usr/bin"})
    assert fake.envs == [{"PATH": "/usr/bin", "npm_config_update_notifier": "false"}]


@pytest.mark.anyio
async def test_ensure_installed_hands_the_installer_an_environment_without_other_servers_secrets(
        tmp_path: Path) -> None:
    base = {"PATH": "/usr/bin", "HOME": "/root", "OTHER_API_KEY": "s3cret", "PLAIN": "x"}
    installer = FakeInstaller()
    await ensure_installed(npm_spec(), StateDir(tmp_path / "state"), installer=installer,
                           env=env_without(base, {"OTHER_API_KEY", "HOME"}))
    assert installer.envs == [{"PATH": "/usr/bin", "HOME": "/root", "PLAIN": "x"}]  # HOME is always inherited


class FakeUv:
    """Stands in for proc.run_command: `uv venv` / `python -m venv` make a venv, installs add a dist."""

    def __init__(self, scripts: Sequence[str] = ("demo-server",)) -> None:
        self.scripts = scripts
        self.calls: list[tuple[str, ...]] = []

    async def __call__(self, argv: Sequence[str], **kw: object) -> CommandResult:
        self.calls.append(tuple(argv))
        if "venv" in argv[:3]:
            _executable(Path(argv[-1]) / "bin" / "python")
        else:
            venv = Path(argv[argv.index("--python") + 1] if "--python" in argv else argv[0]).parent.parent
            info = venv / "lib" / "python3.11" / "site-packages" / "demo_server-1.2.3.dist-info"
            info.mkdir(parents=True)
            (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo_server\nVersion: 1.2.3\n")
            lines = "".join(f"{s} = demo:main\n" for s in self.scripts)
            (info / "entry_points.txt").write_text(f"[console_scripts]\n{lines}")
            for script in self.scripts:
                _executable(venv / "bin" / script)
        return fake_result(argv)


@pytest.mark.anyio
async def test_pypi_install_with_uv_records_version_and_console_script(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeUv(scripts=("demo-server", "demo-admin"))
    monkeypatch.setattr(proc, "run_command", fake)
    monkeypatch.setattr(pypi, "uv_binary", lambda: "/opt/uv")
    spec = ServerSpec(name="demo", source=Source("pypi", "demo-server==1.2.3"), install_generation="g1")

    record = await PypiInstaller().install(spec, tmp_path, env=ENV)

    venv = tmp_path / "venv"
    assert fake.calls == [
        ("/opt/uv", "venv", "--relocatable", "--quiet", "--python", sys.executable, str(venv)),
        ("/opt/uv", "pip", "install", "--python", str(venv / "bin" / "python"), "demo-server==1.2.3"),
    ]
    assert record["installer"] == "uv" and record["resolved_version"] == "1.2.3"
    assert record["command"] == [str(venv / "bin" / "demo-server")]


@pytest.mark.anyio
async def test_pypi_falls_back_to_venv_and_pip_when_uv_is_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proc, "run_command", FakeUv())
    monkeypatch.setattr(pypi, "uv_binary", lambda: None)
    monkeypatch.setattr(pypi, "venv_available", lambda: True)
    spec = ServerSpec(name="demo", source=Source("pypi", "demo-server"), install_generation="g1")

    with capture_logs() as events:
        record = await PypiInstaller().install(spec, tmp_path, env=ENV)

    bin_dir = tmp_path / "venv" / "bin"
    assert record["installer"] == "pip"
    assert record["command"] == [str(bin_dir / "python"), str(bin_dir / "demo-server")]
    fallback = [e for e in events if e["event"] == "install.fallback"]
    assert fallback and "uv not found" in fallback[0]["reason"]


@pytest.mark.anyio
async def test_pypi_dist_with_several_unrelated_scripts_asks_for_spec_command(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proc, "run_command", FakeUv(scripts=("alpha", "beta")))
    monkeypatch.setattr(pypi, "uv_binary", lambda: "/opt/uv")
    spec = ServerSpec(name="demo", source=Source("pypi", "demo-server"), install_generation="g1")

    with pytest.raises(PermanentError, match=r"demo: install failed: demo-server has several console scripts "
                                             r"\(alpha, beta\); set spec.command"):
        await PypiInstaller().install(spec, tmp_path, env=ENV)


# --- path sources ------------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_a_missing_local_file_is_a_permanent_error_naming_server_and_path(tmp_path: Path) -> None:
    missing = tmp_path / "servers" / "gone.py"

    with pytest.raises(PermanentError, match=re.escape(f"mine: install failed: local server file {missing} not found")):
        await ensure_installed(path_spec(missing, name="mine"), StateDir(tmp_path / "state"))

    assert not StateDir(tmp_path / "state").install_dir("mine").exists()


@pytest.mark.anyio
async def test_a_local_file_of_unknown_kind_asks_for_spec_command(tmp_path: Path) -> None:
    data = tmp_path / "server.txt"
    data.write_text("")

    with pytest.raises(PermanentError, match=r"do not know how to run .*set spec\.command"):
        await LocalInstaller().install(path_spec(data), tmp_path, env=ENV)


@pytest.mark.anyio
async def test_a_local_python_server_is_recorded_and_launched_with_this_python(tmp_path: Path) -> None:
    script = tmp_path / "server.py"
    script.write_text("print('hi')\n")
    state = StateDir(tmp_path / "state")
    spec = path_spec(script, args=("--verbose",), env={"TZ": "UTC"}, cwd=str(tmp_path))

    record, changed = await ensure_installed(spec, state)
    launch = launch_spec(spec, record, {"PATH": "/usr/bin", "HOME": "/root"})

    assert changed and record["installer"] == "local" and len(record["resolved_version"]) == 12
    assert state.read_install("local") == record
    assert launch.argv == (sys.executable, str(script), "--verbose")
    assert dict(launch.env) == {"PATH": "/usr/bin", "HOME": "/root", "TZ": "UTC"}
    assert launch.cwd == str(tmp_path)


def test_a_local_spec_command_is_the_interpreter_and_gets_the_path_once(tmp_path: Path) -> None:
    script = tmp_path / "server.py"
    script.write_text("")

    as_interpreter = LocalInstaller().command_for(path_spec(script, command=("/venv/bin/python",)), None)
    already_named = LocalInstaller().command_for(
        path_spec(script, command=("/venv/bin/python", "-u"), args=(str(script),)), None)

    assert as_interpreter == ["/venv/bin/python", str(script)]
    assert already_named == ["/venv/bin/python", "-u"]


# --- launch specs ------------------------------------------------------------------------------------

def test_launch_spec_prepends_the_install_bin_dir_and_puts_spec_env_on_top(tmp_path: Path) -> None:
    bin_dir = tmp_path / "node_modules" / ".bin"
    _executable(bin_dir / "mcp-server-everything")
    _executable(bin_dir / "other-tool")
    spec = npm_spec(args=("stdio",), env={"API_KEY": "x"})
    record = new_record(spec, tmp_path, installer="npm", resolved_version="1",
                        command=[str(bin_dir / "mcp-server-everything")])

    default = launch_spec(spec, record, {"PATH": "/usr/bin", "API_KEY": "base"})
    explicit = launch_spec(npm_spec(command=("other-tool", "--x")), record, {"PATH": "/usr/bin"})

    assert default.argv == (str(bin_dir / "mcp-server-everything"), "stdio")
    assert default.env["PATH"] == f"{bin_dir}{os.pathsep}/usr/bin"
    assert default.env["API_KEY"] == "x"
    assert explicit.argv == (str(bin_dir / "other-tool"), "--x")


# --- prerequisites ------------------------------------------------------------------------------------

def test_prerequisites_name_missing_node_and_npm_with_hints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    problems = prereq.check_prerequisites(npm_spec())

    assert [str(p) for p in problems] == [
        "everything: node >= 18 not found on PATH: install Node.js 18+ from https://nodejs.org or your "
        "package manager",
        "everything: npm not found on PATH: install npm (it ships with Node.js 18+ from https://nodejs.org; "
        "Debian: apt install npm)",
    ]
    assert all(isinstance(p, PrerequisiteError) for p in problems)


def test_prerequisites_report_an_old_node_with_its_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _executable(tmp_path / "node", "#!/bin/sh\necho v16.20.0\n")
    _executable(tmp_path / "npm", "#!/bin/sh\nexit 0\n")
    monkeypatch.setenv("PATH", str(tmp_path))

    problems = prereq.check_prerequisites(npm_spec())

    assert [str(p) for p in problems] == [
        "everything: node >= 18 not found (found v16.20.0): install Node.js 18+ from https://nodejs.org or your "
        "package manager"]


@pytest.mark.anyio
async def test_ensure_installed_stops_at_a_missing_prerequisite_without_installing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    installer = FakeInstaller()

    with pytest.raises(PrerequisiteError, match="node >= 18 not found"):
        await ensure_installed(npm_spec(), StateDir(tmp_path / "state"), installer=installer)

    assert installer.calls == []


def test_pypi_prerequisites_need_uv_or_venv(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = ServerSpec(name="time", source=Source("pypi", "mcp-server-time"), install_generation="g")
    assert prereq.check_prerequisites(spec) == []
    monkeypatch.setattr(prereq, "uv_binary", lambda: None)
    monkeypatch.setattr(prereq, "venv_available", lambda: False)

    problems = prereq.check_prerequisites(spec)

    assert [p.missing for p in problems] == ["neither uv nor python3 with venv found"]
    assert "pip install uv" in problems[0].hint
