"""Foreign configs (legacy, mcpServers, VS Code, registry server.json) -> MCPServer manifest documents."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from mcp_reconcile.errors import ManifestError
from mcp_reconcile.formats import ConversionError, Converted, convert, detect_format, load_foreign
from mcp_reconcile.formats.jsonc import loads as jsonc_loads
from mcp_reconcile.formats.jsonc import strip_comments

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "formats"
MANIFEST_VALIDATOR = Draft202012Validator(json.loads((ROOT / "schemas" / "mcpserver.schema.json").read_text()))
BASE = Path("/cfg")


def assert_valid_manifests(converted: Converted) -> None:
    for document in converted.documents:
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in MANIFEST_VALIDATOR.iter_errors(document)]
        assert not errors, (document["metadata"]["name"], errors)


def specs(converted: Converted) -> dict[str, dict]:
    return {d["metadata"]["name"]: d["spec"] for d in converted.documents}


def convert_one(command: str, args: list | None = None, **entry: object) -> tuple[dict | None, list[str]]:
    """Convert a single mcpServers entry; its spec (None when skipped) and the warnings."""
    data = {"mcpServers": {"srv": {"command": command, "args": args or [], **entry}}}
    converted = convert(data, file="mcp.json", base_dir=BASE)
    assert_valid_manifests(converted)
    return (converted.documents[0]["spec"] if converted.documents else None), converted.warnings


def error_of(data: object, *, file: str = "cfg.json") -> ManifestError:
    with pytest.raises(ManifestError) as info:
        convert(data, file=file, base_dir=BASE)
    return info.value


# ---- one realistic fixture per format ---------------------------------------------------------------

@pytest.mark.parametrize("fixture, fmt", [
    pytest.param("servers_config.json", "legacy", id="legacy servers_config.json"),
    pytest.param("claude_desktop_config.json", "mcpservers", id="claude desktop"),
    pytest.param("cursor_mcp.json", "mcpservers", id="cursor"),
    pytest.param("vscode_mcp.json", "vscode", id="vscode jsonc"),
    pytest.param("registry_npm_server.json", "registry", id="registry npm"),
    pytest.param("registry_pypi_server.json", "registry", id="registry pypi"),
])
def test_every_fixture_converts_to_documents_that_validate_against_the_manifest_schema(fixture, fmt):
    converted = load_foreign(FIXTURES / fixture)
    assert converted.format == fmt
    assert converted.documents
    assert_valid_manifests(converted)


def test_legacy_config_maps_npx_uvx_a_python_script_env_and_health_interval():
    converted = load_foreign(FIXTURES / "servers_config.json")
    got = specs(converted)
    assert list(got) == ["filesystem", "time", "weather", "github"]
    assert got["filesystem"] == {
        "source": {"npm": "@modelcontextprotocol/server-filesystem@2025.8.21"},
        "args": ["/srv/shared"],
        "env": {"NODE_ENV": "production"},
        "health": {"intervalSeconds": 30, "timeoutSeconds": 5},
    }
    assert got["time"]["source"] == {"pypi": "mcp-server-time"}
    assert got["time"]["args"] == ["--local-timezone", "UTC"]
    assert got["weather"]["source"] == {"path": str(FIXTURES / "servers" / "weather_server.py")}
    assert got["weather"]["args"] == ["--units", "metric"]
    assert got["weather"]["env"] == {"WEATHER_API_KEY": "${WEATHER_API_KEY}", "CACHE_TTL": "300"}
    assert got["github"] == {"source": {"npm": "@modelcontextprotocol/server-github"},
                             "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "${GITHUB_TOKEN}"}}


def test_legacy_http_health_probes_are_ignored_with_a_warning_per_server():
    warnings = load_foreign(FIXTURES / "servers_config.json").warnings
    probe_warnings = [w for w in warnings if "endpoint and port ignored" in w]
    assert len(probe_warnings) == 2
    assert "servers.filesystem.health_check" in probe_warnings[0]
    assert "servers.weather.health_check" in probe_warnings[1]


def test_claude_desktop_config_converts_local_servers_and_renames():
    converted = load_foreign(FIXTURES / "claude_desktop_config.json")
    got = specs(converted)
    assert list(got) == ["memory", "fetch", "git", "brave-search"]
    assert got["git"] == {"source": {"pypi": "mcp-server-git==2025.7.1"},
                          "args": ["--repository", "/home/me/src/app"]}
    assert got["brave-search"]["env"] == {"BRAVE_API_KEY": "${BRAVE_API_KEY}"}
    assert any("'Brave Search' is not a valid server name: using 'brave-search'" in w
               for w in converted.warnings)


def test_cursor_config_skips_the_remote_url_entry_without_printing_its_token():
    converted = load_foreign(FIXTURES / "cursor_mcp.json")
    got = specs(converted)
    assert list(got) == ["everything", "local-tools"]
    assert got["everything"]["env"] == {"API_TOKEN": "${EVERYTHING_TOKEN}"}
    assert got["local-tools"] == {"source": {"path": str(FIXTURES / "tools" / "server.mjs")},
                                  "args": ["--verbose"], "envFile": str(FIXTURES / "tools.env")}
    remote = [w for w in converted.warnings if "mcpServers.linear" in w]
    assert remote and "remote" in remote[0] and "skipped" in remote[0]
    assert "not-for-logs" not in "\n".join(converted.warnings)


def test_vscode_jsonc_with_comments_trailing_commas_and_inputs_converts():
    converted = load_foreign(FIXTURES / "vscode_mcp.json")
    got = specs(converted)
    assert list(got) == ["github", "time", "fetch"]
    assert got["github"] == {"source": {"npm": "@modelcontextprotocol/server-github@2025.4.8"},
                             "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "${GITHUB_TOKEN}"}}
    assert got["time"] == {"source": {"pypi": "mcp-server-time==2026.10.19"}, "env": {"TZ": "${TZ}"}}
    assert got["fetch"] == {"source": {"pypi": "mcp-server-fetch"},
                            "args": ["--user-agent", "bot // not a comment, /* nor this */"]}
    assert any("${input:github-token} becomes ${GITHUB_TOKEN}, a secret" in w for w in converted.warnings)
    assert any("servers.docs" in w and "remote http server" in w for w in converted.warnings)


def test_vscode_workspace_folder_and_relative_scripts_resolve_against_the_workspace(tmp_path):
    (tmp_path / ".vscode").mkdir()
    (tmp_path / ".vscode" / "mcp.json").write_text(json.dumps({"servers": {
        "local": {"command": "node", "args": ["build/index.js"], "env": {"ROOT": "${workspaceFolder}/data"}},
        "script": {"command": "python", "args": ["${workspaceFolder}/srv/main.py"]},
    }}))
    got = specs(load_foreign(tmp_path / ".vscode" / "mcp.json"))
    assert got["local"]["source"] == {"path": str(tmp_path / "build" / "index.js")}
    assert got["local"]["env"] == {"ROOT": f"{tmp_path}/data"}
    assert got["script"]["source"] == {"path": f"{tmp_path}/srv/main.py"}


def test_vscode_settings_json_mcp_block_is_read_and_paths_name_it():
    data = {"editor.fontSize": 13, "mcp": {"servers": {"memory": {"command": "npx", "args": ["-y", 1]}}}}
    assert detect_format(data) == "vscode"
    data["mcp"]["servers"]["memory"]["args"] = ["-y", "@modelcontextprotocol/server-memory"]
    converted = convert(data, file="settings.json", base_dir=BASE)
    assert specs(converted) == {"memory": {"source": {"npm": "@modelcontextprotocol/server-memory"}}}
    error = error_of({"mcp": {"servers": {"memory": {"command": 7}}}}, file="settings.json")
    assert str(error) == "settings.json mcp.servers.memory.command: expected string, got integer"


def test_registry_npm_server_json_picks_the_npm_package_and_maps_arguments_and_env():
    converted = load_foreign(FIXTURES / "registry_npm_server.json")
    assert specs(converted) == {"weather": {
        "source": {"npm": "@example/weather-mcp@1.4.0"},
        "args": ["--units", "metric"],
        "env": {"OPENWEATHER_API_KEY": "${OPENWEATHER_API_KEY}",
                "WEATHER_LANG": "${WEATHER_LANG:-en}",
                "WEATHER_REGION": "${WEATHER_REGION}"},
    }}
    text = "\n".join(converted.warnings)
    assert "packages[1]: oci package 'docker.io/example/weather-mcp' skipped" in text
    assert "remotes[0]: remote streamable-http endpoint skipped" in text
    assert "optional variables left out (add them to spec.env if needed): WEATHER_DEBUG" in text
    assert ("packages[0].packageArguments[1]: required argument cache_dir has no value here: left out, "
            "add it to spec.args (the server needs it)") in text


def test_registry_pypi_server_json_keeps_secret_variables_as_references():
    converted = load_foreign(FIXTURES / "registry_pypi_server.json")
    assert specs(converted) == {"postgres-query": {
        "source": {"pypi": "mcp-postgres-query==0.9.2"},
        "env": {"PGPASSWORD": "${PGPASSWORD}", "PGHOST": "${PGHOST:-localhost}",
                "PGUSER": "${PGUSER}", "PG_DSN_TOKEN": "${PG_DSN_TOKEN}"},
    }}
    assert "server.name: server name 'postgres-query' taken from 'io.github.example/Postgres_Query'" in (
        converted.warnings)
    assert any("secrets to set" in w and "PGPASSWORD, PG_DSN_TOKEN" in w for w in converted.warnings)


def test_registry_streamable_http_package_sets_transport_port_and_path():
    data = {"name": "io.github.acme/search", "version": "2.0.0", "packages": [
        {"registryType": "pypi", "identifier": "acme-search", "version": "2.0.0",
         "transport": {"type": "streamable-http", "url": "http://127.0.0.1:8931/api/mcp"},
         "packageArguments": [
             {"type": "named", "name": "--token", "value": "{token}", "variables": {"token": {"isSecret": True}}},
             {"type": "named", "name": "--region", "value": "{region}", "variables": {"region": {"default": "eu"}}},
         ]},
    ]}
    converted = convert(data, file="server.json", base_dir=BASE)
    assert_valid_manifests(converted)
    assert specs(converted) == {"search": {
        "source": {"pypi": "acme-search==2.0.0"}, "transport": "streamable-http", "port": 8931,
        "path": "/api/mcp", "args": ["--region", "eu"],
    }}
    assert any(w.startswith("packages[0].packageArguments[0]: optional argument --token has no value here")
               for w in converted.warnings)


def test_a_variable_the_user_put_on_the_command_line_is_kept_with_a_warning():
    spec, warnings = convert_one("npx", ["-y", "pkg-a", "--key", "${env:API_KEY}"])
    assert spec == {"source": {"npm": "pkg-a"}, "args": ["--key", "${API_KEY}"]}
    assert warnings == ["mcpServers.srv: ${VAR} on the command line is not expanded (only spec.env values "
                        "are): pass the value through env instead"]


def test_registry_server_json_with_only_remotes_converts_to_nothing_with_warnings():
    data = {"name": "io.github.acme/cloud", "remotes": [{"type": "sse", "url": "https://x.example/sse"}]}
    converted = convert(data, file="server.json", base_dir=BASE)
    assert converted.documents == []
    assert any("no npm or pypi package" in w for w in converted.warnings)


# ---- command lines ----------------------------------------------------------------------------------

@pytest.mark.parametrize("command, args, expected", [
    pytest.param("npx", ["-y", "pkg-a"], {"source": {"npm": "pkg-a"}}, id="npx without a version is kept"),
    pytest.param("npx", ["--yes", "@s/pkg@1.2.3", "a", "b"], {"source": {"npm": "@s/pkg@1.2.3"}, "args": ["a", "b"]},
                 id="npx scoped with version and args"),
    pytest.param("npx", ["-y", "-p", "@s/tools@2.0.0", "tool-server", "--x"],
                 {"source": {"npm": "@s/tools@2.0.0"}, "command": "tool-server", "args": ["--x"]},
                 id="npx -p names the package, the bin is the command"),
    pytest.param("npx -y pkg-a --flag", [], {"source": {"npm": "pkg-a"}, "args": ["--flag"]},
                 id="a whole command line in one string is split"),
    pytest.param("C:\\Program Files\\nodejs\\npx.cmd", ["-y", "pkg-a"], {"source": {"npm": "pkg-a"}},
                 id="windows npx.cmd"),
    pytest.param("uvx", ["mcp-server-time@2026.10.19"], {"source": {"pypi": "mcp-server-time==2026.10.19"}},
                 id="uvx pkg@version becomes =="),
    pytest.param("uvx", ["mcp-server-time@latest"], {"source": {"pypi": "mcp-server-time"}},
                 id="uvx pkg@latest is unpinned"),
    pytest.param("uvx", ["--from", "mcp-server-git==1.0", "mcp-server-git", "-r", "."],
                 {"source": {"pypi": "mcp-server-git==1.0"}, "args": ["-r", "."]},
                 id="uvx --from with the same console script"),
    pytest.param("uvx", ["--from", "acme-tools", "acme-mcp"],
                 {"source": {"pypi": "acme-tools"}, "command": "acme-mcp"},
                 id="uvx --from with another console script"),
    pytest.param("uv", ["run", "--with", "mcp-server-time", "mcp-server-time", "--tz", "UTC"],
                 {"source": {"pypi": "mcp-server-time"}, "args": ["--tz", "UTC"]}, id="uv run --with"),
    pytest.param("uv", ["tool", "run", "mcp-server-fetch"], {"source": {"pypi": "mcp-server-fetch"}},
                 id="uv tool run is uvx"),
    pytest.param("uv", ["--directory", "/srv/app", "run", "server.py"], {"source": {"path": "/srv/app/server.py"}},
                 id="uv run of a script in a directory"),
    pytest.param("node", ["/opt/srv/index.js", "--port", 3], {"source": {"path": "/opt/srv/index.js"},
                                                               "args": ["--port", "3"]},
                 id="node absolute script as written"),
    pytest.param("python3", ["srv/main.py"], {"source": {"path": "/cfg/srv/main.py"}},
                 id="python relative script against the config dir"),
    pytest.param("./bin/server.py", ["-v"], {"source": {"path": "/cfg/bin/server.py"}, "args": ["-v"]},
                 id="the script itself as command"),
])
def test_command_lines_map_to_sources(command, args, expected):
    spec, _ = convert_one(command, args)
    assert spec == expected


def test_an_unknown_executable_becomes_a_path_source_with_a_warning():
    spec, warnings = convert_one("/opt/tools/bin/acme-mcp", ["--stdio"])
    assert spec == {"source": {"path": "/opt/tools/bin/acme-mcp"}, "args": ["--stdio"]}
    assert any("mcpServers.srv" in w and "'/opt/tools/bin/acme-mcp' is not npx" in w for w in warnings)


def test_interpreter_options_are_dropped_with_a_warning():
    spec, warnings = convert_one("node", ["--enable-source-maps", "dist/index.js"])
    assert spec == {"source": {"path": "/cfg/dist/index.js"}}
    assert any("node options dropped: --enable-source-maps" in w for w in warnings)


def test_docker_run_is_a_problem_naming_the_file_and_the_entry():
    error = error_of({"mcpServers": {"srv": {"command": "docker", "args": ["run", "-i", "--rm", "mcp/time"]}}},
                     file="mcp.json")
    assert str(error) == ("mcp.json mcpServers.srv: 'docker run' runs a container: containers are not supported; "
                          "run the server as a local process (npx, uvx, a script) instead")


def test_a_disabled_client_entry_is_converted_as_stopped():
    spec, _ = convert_one("npx", ["-y", "pkg-a"], disabled=True)
    assert spec == {"source": {"npm": "pkg-a"}, "desiredState": "stopped"}


@pytest.mark.parametrize("command, args, reason", [
    pytest.param("npx", ["-y", "github:acme/server"], "not an npm registry package", id="npx of a git repo"),
    pytest.param("uvx", ["--from", "git+https://github.com/acme/srv", "srv"], "is not a PyPI package",
                 id="uvx from git"),
    pytest.param("npx", ["-y", "Bad_Name"], "is not an npm package name", id="npx name npm rejects"),
    pytest.param("npx", ["-y"], "npx without a package", id="npx alone"),
])
def test_a_command_line_that_cannot_be_converted_is_an_error_at_its_entry(command, args, reason):
    error = error_of({"mcpServers": {"srv": {"command": command, "args": args}}}, file="mcp.json")
    assert error.json_path == "mcpServers.srv"
    assert str(error).startswith("mcp.json mcpServers.srv: ")
    assert reason in error.reason


# ---- names, variables, secrets ----------------------------------------------------------------------

def test_names_that_collide_after_slugifying_are_an_error_naming_both_entries():
    data = {"mcpServers": {"my_server": {"command": "npx", "args": ["a"]},
                           "My Server": {"command": "npx", "args": ["b"]}}}
    error = error_of(data, file="mcp.json")
    assert str(error) == ('mcp.json mcpServers["My Server"]: server name \'my-server\' is already taken by '
                          "mcpServers.my_server: rename one of them")


def test_an_unsupported_client_variable_is_an_error_naming_its_path():
    error = error_of({"servers": {"srv": {"command": "npx", "args": ["-y", "${command:pickFile}"]}}})
    assert str(error).startswith("cfg.json servers.srv.args[1]: client variable ${command:pickFile}")


def test_secret_references_are_kept_and_never_resolved(monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_s3cr3t")
    monkeypatch.setenv("BRAVE_API_KEY", "brave_s3cr3t")
    for fixture in ("servers_config.json", "vscode_mcp.json", "claude_desktop_config.json"):
        converted = load_foreign(FIXTURES / fixture)
        dumped = json.dumps(converted.documents) + "\n".join(converted.warnings)
        assert "s3cr3t" not in dumped


@pytest.mark.parametrize("command, args", [
    pytest.param("uvx", ["--index-url", "https://bob:s3cr3t@pypi.example/simple", "pkg-a"], id="uvx index url"),
    pytest.param("npx", ["--registry", "https://s3cr3t@npm.example", "-y", "pkg-a"], id="npx registry"),
    pytest.param("/opt/acme-mcp", ["--token", "s3cr3t"], id="unknown executable with a token arg"),
    pytest.param("node", ["--env-file=s3cr3t.env", "x.js"], id="interpreter option value"),
])
def test_warnings_name_options_but_never_echo_their_values(command, args):
    _, warnings = convert_one(command, args)
    assert warnings
    assert "s3cr3t" not in "\n".join(warnings)


def test_urls_in_messages_keep_only_scheme_and_host():
    converted = convert({"mcpServers": {"r": {"type": "sse", "url": "https://u:s3cr3t@h.example:8443/p?k=s3cr3t"}}},
                        file="mcp.json", base_dir=BASE)
    assert converted.warnings == ["mcpServers.r: remote sse server (https://h.example:8443) skipped: "
                                  "not a local process this tool manages"]
    error = error_of({"mcpServers": {"g": {"command": "uvx", "args": ["--from", "git+https://s3cr3t@gh.example/x",
                                                                     "x"]}}})
    assert "s3cr3t" not in str(error) and "'git+https://gh.example'" in str(error)


def test_a_bad_npm_spec_is_explained_in_words_not_as_a_regex():
    error = error_of({"mcpServers": {"srv": {"command": "npx", "args": ["-y", "Bad_Name"]}}}, file="mcp.json")
    assert str(error) == ("mcp.json mcpServers.srv: cannot be converted: spec.source.npm: 'Bad_Name' is not an "
                          "npm package name[@version]")


def test_a_bad_env_name_is_named_since_names_are_not_secret():
    error = error_of({"mcpServers": {"srv": {"command": "npx", "env": {"bad-key": "s3cr3t"}}}})
    assert str(error) == "cfg.json mcpServers.srv.env: 'bad-key' is not a valid name here"


def test_python_dash_m_becomes_the_guessed_pypi_package_with_a_warning_that_says_why():
    spec, warnings = convert_one("/usr/bin/python3", ["-m", "mcp_server_time"])
    assert spec == {"source": {"pypi": "mcp-server-time"}, "command": ["python", "-m", "mcp_server_time"]}
    assert warnings == ["mcpServers.srv: 'python3 -m mcp_server_time' taken for the PyPI package "
                        "'mcp-server-time' (guessed from the module name): check that it is the package you meant"]


def test_schema_messages_under_env_never_quote_the_value():
    error = error_of({"mcpServers": {"srv": {"command": "npx", "env": {"TOKEN": {"v": "s3cr3t"}}}}})
    assert str(error) == "cfg.json mcpServers.srv.env.TOKEN: expected string or number or boolean, got object"
    assert "s3cr3t" not in str(error)


# ---- detection --------------------------------------------------------------------------------------

@pytest.mark.parametrize("data, expected", [
    pytest.param({"mcpServers": {}}, "mcpservers", id="mcpServers"),
    pytest.param({"servers": {"a": {"type": "nodejs", "command": "npx"}}}, "legacy", id="legacy type"),
    pytest.param({"servers": {"a": {"command": "x", "health_check": {}}}}, "legacy", id="legacy health_check"),
    pytest.param({"servers": {"a": {"type": "stdio", "command": "npx"}}}, "vscode", id="vscode type stdio"),
    pytest.param({"servers": {"a": {"command": "npx"}}}, "vscode", id="no legacy mark is vscode"),
    pytest.param({"inputs": [], "servers": {"a": {"type": "python", "command": "x"}}}, "vscode",
                 id="inputs make it vscode"),
    pytest.param({"name": "io.github.a/b", "packages": []}, "registry", id="registry server.json"),
    pytest.param({"server": {"name": "io.github.a/b"}, "_meta": {}}, "registry", id="registry api wrapper"),
    pytest.param({"servers": []}, None, id="servers list"),
    pytest.param({"name": "x"}, None, id="name alone"),
    pytest.param([], None, id="a list"),
    pytest.param(None, None, id="null"),
])
def test_detect_format(data, expected):
    assert detect_format(data) == expected


# ---- errors -----------------------------------------------------------------------------------------

def test_bad_json_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "mcp.json"
    path.write_text('{\n  "mcpServers": {\n    "a": {"command": "npx"}\n    "b": {}\n  }\n}\n')
    with pytest.raises(ManifestError) as info:
        load_foreign(path)
    assert info.value.line == 4
    assert str(info.value) == f"{path}:4: not valid JSON: Expecting ',' delimiter (column 5)"


def test_an_unknown_format_names_the_file(tmp_path):
    path = tmp_path / "package.json"
    path.write_text('{"name": "x", "dependencies": {}}')
    with pytest.raises(ManifestError) as info:
        load_foreign(path)
    assert str(info.value) == (f"{path}: not a recognised MCP config: expected 'mcpServers', 'servers' "
                               "or a registry server.json")


def test_a_schema_violation_names_the_file_and_json_path():
    error = error_of({"servers": {"foo": {"type": "nodejs", "command": 42}}}, file="servers_config.json")
    assert error.json_path == "servers.foo.command"
    assert str(error) == "servers_config.json servers.foo.command: expected string, got integer"


def test_every_schema_violation_is_reported_in_file_order():
    data = {"servers": {"b": {"type": "nodejs", "command": "npx", "args": "x"},
                        "a": {"type": "ruby", "command": "x",
                              "health_check": {"interval": 0}}}}
    error = error_of(data, file="servers_config.json")
    assert isinstance(error, ConversionError)
    assert [p.json_path for p in error.problems] == ["servers.b.args", "servers.a.type",
                                                     "servers.a.health_check.interval"]
    assert str(error).splitlines()[0] == "servers_config.json servers.b.args: expected array, got string"


def test_registry_schema_violation_in_the_api_wrapper_names_the_full_path():
    data = {"server": {"name": "io.github.a/b", "packages": [{"registryType": "npm"}]}}
    error = error_of(data, file="server.json")
    assert str(error) == "server.json server.packages[0]: 'identifier' is a required property"


def test_an_entry_with_neither_command_nor_url_is_an_error():
    error = error_of({"mcpServers": {"srv": {"env": {"A": "1"}}}}, file="mcp.json")
    assert str(error) == "mcp.json mcpServers.srv: needs 'command' (a local server) or 'url' (a remote one)"


@pytest.mark.parametrize("data", [
    pytest.param({"mcpServers": {"x": "npx"}}, id="entry is a string"),
    pytest.param({"mcpServers": {"x": {"command": ""}}}, id="empty command"),
    pytest.param({"mcpServers": {"x": {"command": "npx", "args": [None]}}}, id="null arg"),
    pytest.param({"servers": {"x": {"type": "nodejs"}}}, id="legacy without command"),
    pytest.param({"name": "a/b", "packages": [1]}, id="registry package not an object"),
    pytest.param({"name": "a/b", "packages": [{"registryType": "npm", "identifier": "x",
                                               "environmentVariables": [{"name": "1BAD"}]}]},
                 id="registry bad env name"),
    pytest.param({"servers": {"x": {"command": "npx"}}, "inputs": [{"type": "promptString"}]},
                 id="vscode input without id"),
    pytest.param("text", id="a string"),
])
def test_bad_input_is_a_manifest_error_never_a_traceback(data):
    error = error_of(data)
    assert str(error).startswith("cfg.json")


def test_a_missing_file_is_a_manifest_error(tmp_path):
    with pytest.raises(ManifestError, match="cannot read"):
        load_foreign(tmp_path / "nope.json")


# ---- JSONC ------------------------------------------------------------------------------------------

def test_jsonc_strips_comments_and_trailing_commas_outside_strings_only():
    text = '{"a": "x // y", /* c, */ "b": ["/* z */", "q\\"//",], // end\n "c": {"d": 1,},}'
    assert jsonc_loads(text, file="f") == {"a": "x // y", "b": ["/* z */", 'q"//'], "c": {"d": 1}}


def test_jsonc_keeps_lines_and_columns_so_errors_point_at_the_source():
    text = '/* one\ntwo */ {\n"a": 1, // x\n"b": }'
    assert strip_comments(text).count("\n") == text.count("\n")
    with pytest.raises(ManifestError) as info:
        jsonc_loads(text, file="f.json")
    assert info.value.line == 4


def test_jsonc_reports_an_unterminated_comment_with_its_line():
    with pytest.raises(ManifestError) as info:
        jsonc_loads('{\n  "a": 1 /* open\n}', file="f.json")
    assert str(info.value) == "f.json:2: not valid JSON: unterminated /* comment"


def test_load_foreign_reads_a_copied_fixture_relative_to_its_new_directory(tmp_path):
    shutil.copy(FIXTURES / "servers_config.json", tmp_path / "servers_config.json")
    got = specs(load_foreign(tmp_path / "servers_config.json"))
    assert got["weather"]["source"] == {"path": str(tmp_path / "servers" / "weather_server.py")}
