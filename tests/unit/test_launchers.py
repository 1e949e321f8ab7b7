"""Launcher command lines (`npx`, `uvx`, `uv run`, `pipx run`, `node`, `python`) become real sources, the same
way in every client format, and a missing script or a container is a problem naming the file and server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcp_reconcile import cli
from mcp_reconcile.errors import ManifestError
from mcp_reconcile.formats import convert
from mcp_reconcile.manifest import load_manifests

KEY = b"k" * 32


def entry_in(fmt: str, command: str, args: list[str]) -> dict:
    """One server entry, `srv`, in the shape of the named client format."""
    entry = {"command": command, "args": args}
    if fmt == "legacy":
        return {"servers": {"srv": {"type": "python", **entry}}}
    if fmt == "vscode":
        return {"servers": {"srv": {"type": "stdio", **entry}}}
    return {"mcpServers": {"srv": entry}}


FORMATS = [pytest.param("mcpservers", id="mcpServers client config"),
           pytest.param("legacy", id="legacy servers_config.json"),
           pytest.param("vscode", id="VS Code mcp.json")]


def converted_spec(fmt: str, command: str, args: list[str], base: Path) -> tuple[dict, list[str]]:
    converted = convert(entry_in(fmt, command, args), file="cfg.json", base_dir=base)
    [document] = converted.documents
    return document["spec"], converted.warnings


def with_base(value: object, base: Path) -> object:
    """`{base}` in an expected value stands for the config's directory."""
    if isinstance(value, str):
        return value.replace("{base}", str(base))
    if isinstance(value, list):
        return [with_base(v, base) for v in value]
    if isinstance(value, dict):
        return {k: with_base(v, base) for k, v in value.items()}
    return value


# ---- every common launcher maps to a real source -------------------------------------------------------

LAUNCHES = [
    pytest.param("npx", ["-y", "@modelcontextprotocol/server-everything@2026.8.31", "stdio"],
                 {"source": {"npm": "@modelcontextprotocol/server-everything@2026.8.31"}, "args": ["stdio"]},
                 id="npx -y with a pinned scoped package keeps the pin and the server's args"),
    pytest.param("npx", ["--yes", "pkg-a"], {"source": {"npm": "pkg-a"}},
                 id="npx --yes with an unpinned package imports it unpinned"),
    pytest.param("npx", ["-y", "-p", "@s/tools@2.0.0", "tool-server", "--x"],
                 {"source": {"npm": "@s/tools@2.0.0"}, "command": "tool-server", "args": ["--x"]},
                 id="npx -p names the package and the word after it is the bin to run"),
    pytest.param("npx", ["--package=@s/tools", "tools"], {"source": {"npm": "@s/tools"}},
                 id="npx --package=PKG running the package's own bin needs no command"),
    pytest.param("uvx", ["mcp-server-fetch", "--ignore-robots-txt"],
                 {"source": {"pypi": "mcp-server-fetch"}, "args": ["--ignore-robots-txt"]},
                 id="uvx PKG runs the package's console script"),
    pytest.param("uvx", ["mcp-server-time@2026.10.19"], {"source": {"pypi": "mcp-server-time==2026.10.19"}},
                 id="uvx PKG@version becomes a == pin"),
    pytest.param("uvx", ["--from", "acme-tools==1.0", "acme-mcp", "-v"],
                 {"source": {"pypi": "acme-tools==1.0"}, "command": "acme-mcp", "args": ["-v"]},
                 id="uvx --from PKG CMD installs PKG and runs CMD"),
    pytest.param("uv", ["run", "mcp-server-time"], {"source": {"pypi": "mcp-server-time"}},
                 id="uv run PKG, the seed's form, is the PyPI package and not a path to uv"),
    pytest.param("uv", ["run", "mcp-server-time", "--local-timezone", "UTC"],
                 {"source": {"pypi": "mcp-server-time"}, "args": ["--local-timezone", "UTC"]},
                 id="uv run PKG keeps the server's own args"),
    pytest.param("uv run mcp-server-time", [], {"source": {"pypi": "mcp-server-time"}},
                 id="uv run PKG written as one command string is split first"),
    pytest.param("uv", ["run", "--with", "acme-tools", "acme-mcp", "--stdio"],
                 {"source": {"pypi": "acme-tools"}, "command": "acme-mcp", "args": ["--stdio"]},
                 id="uv run --with PKG CMD installs PKG and runs CMD"),
    pytest.param("uv", ["run", "--with", "mcp-server-time", "mcp-server-time"], {"source": {"pypi": "mcp-server-time"}},
                 id="uv run --with PKG running PKG's own script needs no command"),
    pytest.param("uv", ["tool", "run", "mcp-server-fetch"], {"source": {"pypi": "mcp-server-fetch"}},
                 id="uv tool run is uvx"),
    pytest.param("uv", ["run", "srv/server.py", "--port", "1"],
                 {"source": {"path": "{base}/srv/server.py"}, "args": ["--port", "1"]},
                 id="uv run FILE.py runs the script beside the config"),
    pytest.param("uv", ["--directory", "/srv/app", "run", "server.py"], {"source": {"path": "/srv/app/server.py"}},
                 id="uv --directory D run FILE.py runs the script in D"),
    pytest.param("uv", ["run", "python", "server.py"], {"source": {"path": "{base}/server.py"}},
                 id="uv run python FILE.py is the script too"),
    pytest.param("pipx", ["run", "mcp-server-fetch", "--x"], {"source": {"pypi": "mcp-server-fetch"}, "args": ["--x"]},
                 id="pipx run PKG is the PyPI package"),
    pytest.param("pipx", ["run", "--spec", "acme-tools==1.0", "acme-mcp"],
                 {"source": {"pypi": "acme-tools==1.0"}, "command": "acme-mcp"},
                 id="pipx run --spec PKG CMD installs PKG and runs CMD"),
    pytest.param("node", ["build/index.js", "--stdio"],
                 {"source": {"path": "{base}/build/index.js"}, "args": ["--stdio"]},
                 id="node FILE.js is a path source resolved against the config's directory"),
    pytest.param("node", ["/opt/srv/server"], {"source": {"path": "/opt/srv/server"}, "command": "node"},
                 id="node FILE without a .js suffix keeps node as the command"),
    pytest.param("python", ["srv/main.py"], {"source": {"path": "{base}/srv/main.py"}},
                 id="python FILE.py is a path source"),
    pytest.param("python3", ["-u", "/opt/main.py", "-v"], {"source": {"path": "/opt/main.py"}, "args": ["-v"]},
                 id="python3 with its own options is still the script"),
    pytest.param("python", ["-m", "mcp_server_time", "--local-timezone", "UTC"],
                 {"source": {"pypi": "mcp-server-time"}, "command": ["python", "-m", "mcp_server_time"],
                  "args": ["--local-timezone", "UTC"]},
                 id="python -m MODULE is the package guessed from the module, run with -m"),
    pytest.param("./bin/server.py", ["-v"], {"source": {"path": "{base}/bin/server.py"}, "args": ["-v"]},
                 id="a script as the command is a path source"),
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("command", "args", "expected"), LAUNCHES)
def test_every_common_launcher_maps_to_a_real_source_in_every_client_format(
        fmt: str, command: str, args: list[str], expected: dict, tmp_path: Path) -> None:
    spec, _ = converted_spec(fmt, command, args, tmp_path)
    assert spec == with_base(expected, tmp_path)


def test_python_dash_m_of_a_module_beside_the_config_is_that_file(tmp_path: Path) -> None:
    (tmp_path / "weather.py").write_text("")
    spec, warnings = converted_spec("legacy", "python3", ["-m", "weather", "--units", "metric"], tmp_path)
    assert spec == {"source": {"path": str(tmp_path / "weather.py")}, "args": ["--units", "metric"]}
    assert not any("guessed" in w for w in warnings)


def test_uv_run_of_a_script_warns_that_its_dependencies_must_be_importable(tmp_path: Path) -> None:
    _, warnings = converted_spec("mcpservers", "uv", ["run", "server.py"], tmp_path)
    assert warnings == ["mcpServers.srv: was started with 'uv run': a path source runs the script as is, so its "
                        "dependencies must already be importable"]


# ---- forms that cannot become a source are problems at their entry -----------------------------------

PROBLEMS = [
    pytest.param("docker", ["run", "-i", "--rm", "mcp/time"],
                 "'docker run' runs a container: containers are not supported",
                 id="docker run is a problem: containers are not supported"),
    pytest.param("podman", ["run", "-i", "mcp/time"], "'podman run' runs a container: containers are not supported",
                 id="podman run is the same problem"),
    pytest.param("uv", ["pip", "install", "x"], "'uv pip' is not 'uv run' or 'uv tool run'",
                 id="a uv command other than run starts no server"),
    pytest.param("uv", ["--directory", "/proj", "run", "my-server"], "from the uv project in '/proj'",
                 id="uv run of a project's own command is not a package to install"),
    pytest.param("pipx", ["install", "x"], "'pipx install' is not 'pipx run'", id="pipx install starts no server"),
    pytest.param("python3", ["-c", "import srv; srv.main()"], "python3 -c runs inline code",
                 id="python -c runs inline code, not a server file"),
    pytest.param("node", ["-e", "require('x')"], "node -e runs inline code", id="node -e runs inline code"),
    pytest.param("node", [], "node without a script to run", id="node alone runs nothing"),
    pytest.param("uvx", [], "uvx without a package", id="uvx alone names no package"),
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("command", "args", "reason"), PROBLEMS)
def test_a_launcher_form_that_names_no_source_is_a_problem_at_its_entry(
        fmt: str, command: str, args: list[str], reason: str, tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        convert(entry_in(fmt, command, args), file="cfg.json", base_dir=tmp_path)
    assert info.value.file == "cfg.json"
    assert info.value.json_path in ("mcpServers.srv", "servers.srv")
    assert reason in info.value.reason


def test_a_container_problem_in_a_config_file_names_the_file_and_server_and_the_others_still_convert(
        tmp_path: Path) -> None:
    config = tmp_path / "claude_desktop_config.json"
    config.write_text(json.dumps({"mcpServers": {
        "fetch": {"command": "uvx", "args": ["mcp-server-fetch"]},
        "puppeteer": {"command": "docker", "args": ["run", "-i", "--rm", "mcp/puppeteer"]}}}))
    result = load_manifests([str(config)], environ={}, key=KEY)
    assert [str(p) for p in result.problems] == [
        f"{config} mcpServers.puppeteer: 'docker run' runs a container: containers are not supported; run the "
        "server as a local process (npx, uvx, a script) instead"]


# ---- a path source must exist ------------------------------------------------------------------------

def test_a_script_that_does_not_exist_is_a_validation_problem_of_the_config(tmp_path: Path) -> None:
    config = tmp_path / "servers_config.json"
    config.write_text(json.dumps({"servers": {
        "time": {"type": "python", "command": "uv", "args": ["run", "mcp-server-time"]},
        "weather": {"type": "python", "command": "python3", "args": ["servers/weather.py"]}}}))
    result = load_manifests([str(config)], environ={}, key=KEY)
    assert [str(p) for p in result.problems] == [
        f"{config}[1] spec.source.path: '{tmp_path}/servers/weather.py' does not exist"]
    assert [s.name for s in result.specs] == ["time"]
    assert str(result.by_name["time"].source) == "pypi:mcp-server-time"


def test_the_same_script_once_it_exists_validates(tmp_path: Path) -> None:
    (tmp_path / "servers").mkdir()
    (tmp_path / "servers" / "weather.py").write_text("")
    config = tmp_path / "servers_config.json"
    config.write_text(json.dumps({"servers": {"weather": {"type": "python", "command": "python3",
                                                          "args": ["servers/weather.py"]}}}))
    result = load_manifests([str(config)], environ={}, key=KEY)
    assert result.problems == []
    assert result.by_name["weather"].source.ref == str(tmp_path / "servers" / "weather.py")


def test_import_of_a_missing_script_exits_1_naming_the_server_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"local": {"command": "node", "args": ["gone.js"]}}}))
    out = tmp_path / "manifests"
    assert cli.main(["import", str(config), "-d", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{config} -> local[0] spec.source.path: '{tmp_path}/gone.js' does not exist" in err
    assert not out.exists()


def test_import_of_the_seed_form_writes_a_pypi_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "servers_config.json"
    config.write_text(json.dumps({"servers": {"time": {"type": "python", "command": "uv",
                                                       "args": ["run", "mcp-server-time"]}}}))
    assert cli.main(["import", str(config)]) == 0
    out = capsys.readouterr().out
    assert "source:\n    pypi: mcp-server-time\n" in out
    assert "path:" not in out


def test_a_yaml_manifest_whose_path_source_is_a_directory_is_a_problem(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text("apiVersion: mcp-reconcile/v1\nkind: MCPServer\nmetadata: {name: a}\n"
                        f"spec: {{source: {{path: {tmp_path}}}}}\n")
    result = load_manifests([str(manifest)], environ={}, key=KEY)
    assert [str(p) for p in result.problems] == [f"{manifest}[0] spec.source.path: '{tmp_path}' is not a file"]
