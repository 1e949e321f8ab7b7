"""Manifests: every problem located as `file[doc] json.path: reason` (or `file:line`), `${VAR}` expansion,
secrets, relative paths and file discovery."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mcp_reconcile.manifest import LoadResult, load_manifests
from mcp_reconcile.model import Source

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "manifests"
SECRET = "sk-test-SECRET-12345"

WriteManifest = Callable[..., Path]

HEADER = """\
apiVersion: mcp-reconcile/v1
kind: MCPServer
"""


def server(name: str, body: str = "", *, source: str = '{npm: "pkg@1.0.0"}') -> str:
    """One manifest document; `body` holds extra lines of `spec:`, indented by two spaces."""
    extra = "".join(f"  {line}\n" for line in body.splitlines())
    return f"{HEADER}metadata: {{name: {name}}}\nspec:\n  source: {source}\n{extra}"


def load(*paths: Path | str, environ: dict[str, str] | None = None) -> LoadResult:
    return load_manifests([str(p) for p in paths], environ=environ or {}, key=b"k" * 32)


def messages(result: LoadResult) -> list[str]:
    return [str(p) for p in result.problems]


# --- problems, located ------------------------------------------------------------------------------------

def test_invalid_yaml_names_the_file_and_line(write_manifest: WriteManifest) -> None:
    path = write_manifest(server("a") + "  command: node: server.js\n  args: []\n")  # line 6 is wrong
    result = load(path)
    assert len(result.problems) == 1
    problem = result.problems[0]
    assert (problem.file, problem.line, problem.doc_index) == (str(path), 6, None)
    assert str(problem) == f"{path}:6: invalid YAML: mapping values are not allowed here"
    assert result.specs == []
    assert result.broken_files == {str(path)}


@pytest.mark.parametrize(("body", "source", "expected"), [
    pytest.param("", '{npm: "not a package"}', "spec.source.npm: 'not a package' is not name@version",
                 id="an npm source that is not name@version"),
    pytest.param("", '{pypi: "mcp server time"}', "spec.source.pypi: 'mcp server time' is not name==version",
                 id="a pypi source that is not name==version"),
    pytest.param("", '{npm: "a@1", pypi: "b==1"}', "spec.source: exactly one of npm / pypi / path is required",
                 id="two sources"),
    pytest.param("", "{}", "spec.source: exactly one of npm / pypi / path is required", id="no source"),
    pytest.param("restartPolicy: Sometimes", '{npm: "a@1"}',
                 "spec.restartPolicy: 'Sometimes' is not one of ['Always', 'OnFailure', 'Never']",
                 id="an unknown restartPolicy"),
    pytest.param("args: [ok, {a: 1}]", '{npm: "a@1"}',
                 "spec.args[1]: {'a': 1} is not of type 'string', 'number', 'boolean'",
                 id="a mapping where an arg belongs, located by index"),
    pytest.param("colour: blue", '{npm: "a@1"}', "spec: unknown field(s) ('colour' was unexpected)",
                 id="an unknown field"),
    pytest.param("health: {failureThreshold: 0}", '{npm: "a@1"}',
                 "spec.health.failureThreshold: 0 is less than the minimum of 1", id="a nested bound"),
])
def test_a_schema_violation_names_file_document_and_json_path(
        write_manifest: WriteManifest, body: str, source: str, expected: str) -> None:
    path = write_manifest(server("ok") + "---\n" + server("a", body, source=source))
    result = load(path)
    assert messages(result) == [f"{path}[1] {expected}"]
    assert [s.name for s in result.specs] == ["ok"]
    assert result.blocked == {"a"}


def test_every_schema_problem_of_a_document_is_reported(write_manifest: WriteManifest) -> None:
    path = write_manifest(server("a", "transport: pigeon\nport: 0", source='{npm: "a@1"}'))
    assert messages(load(path)) == [
        f"{path}[0] spec.port: 0 is less than the minimum of 1",
        f"{path}[0] spec.transport: 'pigeon' is not one of ['stdio', 'streamable-http']"]


def test_a_bad_server_name_is_a_schema_problem(write_manifest: WriteManifest) -> None:
    path = write_manifest(server("Bad_Name"))
    [message] = messages(load(path))
    assert message.startswith(f"{path}[0] metadata.name: 'Bad_Name' does not match ")


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("apiVersion: mcp-reconcile/v1\nkind: Deployment\nmetadata: {name: a}\nspec: {}\n",
                 "[0] kind: unknown kind 'Deployment' (expected MCPServer or MCPClient)", id="an unknown kind"),
    pytest.param("apiVersion: mcp-reconcile/v2\nkind: MCPServer\nmetadata: {name: a}\nspec: {}\n",
                 "[0] apiVersion: unknown apiVersion 'mcp-reconcile/v2' (expected mcp-reconcile/v1)",
                 id="an unknown apiVersion"),
    pytest.param("- just\n- a list\n", "[0]: a manifest document must be a mapping, got list", id="a list"),
])
def test_a_document_that_is_not_an_mcpserver_is_refused(write_manifest: WriteManifest, text: str,
                                                       expected: str) -> None:
    path = write_manifest(text)
    assert messages(load(path)) == [f"{path}{expected}"]


def test_a_duplicate_name_across_files_names_the_first_file(write_manifest: WriteManifest) -> None:
    first = write_manifest(server("a"), "a.yaml")
    second = write_manifest(server("b") + "---\n" + server("a", source='{npm: "other@2.0.0"}'), "b.yaml")
    result = load(first.parent)
    assert messages(result) == [f"{second}[1] metadata.name: duplicate server name 'a' (first defined in {first}[0])"]
    assert result.by_name["a"].source == Source("npm", "pkg@1.0.0")


def test_depends_on_a_missing_server_blocks_it_and_its_dependents(write_manifest: WriteManifest) -> None:
    path = write_manifest(server("a", "dependsOn: [ghost]") + "---\n" + server("b", "dependsOn: [a]")
                          + "---\n" + server("c"))
    result = load(path)
    assert messages(result) == [f"{path}[0] spec.dependsOn[0]: dependsOn names 'ghost', which no manifest declares",
                                f"{path}[1] spec.dependsOn[0]: depends on 'a', which has a problem (fix 'a' first)"]
    assert [s.name for s in result.specs] == ["c"]
    assert result.blocked == {"a", "b"}


def test_a_dependency_cycle_is_reported_with_the_cycle(write_manifest: WriteManifest) -> None:
    path = write_manifest(server("a", "dependsOn: [b]") + "---\n" + server("b", "dependsOn: [a]")
                          + "---\n" + server("c"))
    result = load(path)
    assert messages(result) == [f"{path}[0] spec.dependsOn: dependsOn cycle: a -> b -> a"]
    assert [s.name for s in result.specs] == ["c"]
    assert result.blocked == {"a", "b"}


def test_every_independent_dependency_cycle_is_reported_and_blocked(write_manifest: WriteManifest) -> None:
    path = write_manifest(server("a", "dependsOn: [b]") + "---\n" + server("b", "dependsOn: [c]")
                          + "---\n" + server("c", "dependsOn: [a]") + "---\n" + server("d")
                          + "---\n" + server("f", "dependsOn: [f]"))
    result = load(path)
    assert messages(result) == [f"{path}[0] spec.dependsOn: dependsOn cycle: a -> b -> c -> a",
                                f"{path}[4] spec.dependsOn: dependsOn cycle: f -> f"]
    assert [s.name for s in result.specs] == ["d"]
    assert result.blocked == {"a", "b", "c", "f"}


def test_a_server_depending_on_a_server_with_a_problem_gets_a_problem_of_its_own(
        write_manifest: WriteManifest) -> None:
    broken = write_manifest(server("a", "colour: blue"), "1-broken.yaml")
    path = write_manifest(server("b", "dependsOn: [c, a]") + "---\n" + server("c", "dependsOn: [a]")
                          + "---\n" + server("d"), "2-dependents.yaml")
    result = load(broken.parent)
    assert messages(result) == [
        f"{broken}[0] spec: unknown field(s) ('colour' was unexpected)",
        f"{path}[0] spec.dependsOn[0]: depends on 'c', which has a problem (fix 'c' first)",
        f"{path}[0] spec.dependsOn[1]: depends on 'a', which has a problem (fix 'a' first)",
        f"{path}[1] spec.dependsOn[0]: depends on 'a', which has a problem (fix 'a' first)"]
    assert [s.name for s in result.specs] == ["d"]
    assert result.blocked == {"a", "b", "c"}


def test_a_missing_variable_without_default_is_a_problem_that_says_how_to_fix_it(
        write_manifest: WriteManifest) -> None:
    path = write_manifest(server("a", "env:\n  API_KEY: ${API_KEY}"))
    result = load(path, environ={})
    assert messages(result) == [
        f"{path}[0] spec.env.API_KEY: ${{API_KEY}} is not set in the controller's environment or envFile "
        "(set it, or give a default: ${API_KEY:-value})"]
    assert result.specs == []
    assert result.blocked == {"a"}


@pytest.mark.parametrize(("body", "expected"), [
    pytest.param("env:\n  TOKEN: [hunter2-secret]",
                 "spec.env.TOKEN: the value is not of type 'string', 'number', 'boolean'", id="a list as a value"),
    pytest.param("env:\n  TOKEN: {nested: hunter2-secret}",
                 "spec.env.TOKEN: the value is not of type 'string', 'number', 'boolean'", id="a mapping as a value"),
    pytest.param("env: [TOKEN=hunter2-secret]", "spec.env: the value is not of type 'object'",
                 id="a list where the env mapping belongs"),
    pytest.param("env: TOKEN=hunter2-secret", "spec.env: the value is not of type 'object'",
                 id="a string where the env mapping belongs"),
])
def test_a_schema_violation_in_env_never_quotes_the_value(write_manifest: WriteManifest, body: str,
                                                          expected: str) -> None:
    path = write_manifest(server("a", body))
    result = load(path)
    assert messages(result) == [f"{path}[0] {expected}"]
    assert "hunter2" not in repr([p.__dict__ for p in result.problems])


def test_a_bad_env_name_is_quoted_because_names_are_not_secret(write_manifest: WriteManifest) -> None:
    path = write_manifest(server("a", "env:\n  BAD-NAME: hunter2-secret"))
    assert messages(load(path)) == [f"{path}[0] spec.env: 'BAD-NAME' does not match '^[A-Za-z_][A-Za-z0-9_]*$'"]


def test_a_missing_file_is_a_problem(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert messages(load(missing)) == [f"{missing}: no such file or directory"]


def test_problems_of_several_files_come_in_file_order() -> None:
    broken = FIXTURES / "broken"
    assert messages(load(broken)) == [
        f"{broken / '01-bad-yaml.yaml'}:6: invalid YAML: expected ',' or '}}', but got '<scalar>'",
        f"{broken / '02-schema.yaml'}[0] spec.source.npm: 'not a package' is not name@version",
        f"{broken / '02-schema.yaml'}[1] spec.restartPolicy: 'Sometimes' is not one of "
        "['Always', 'OnFailure', 'Never']",
        f"{broken / '03-kind.yaml'}[0] kind: unknown kind 'Deployment' (expected MCPServer or MCPClient)",
    ]


def test_depends_on_problems_keep_file_order_among_other_problems(write_manifest: WriteManifest) -> None:
    first = write_manifest(server("a", "dependsOn: [ghost]"), "1-first.yaml")
    second = write_manifest(server("b", "colour: blue"), "2-second.yaml")
    assert messages(load(first.parent)) == [
        f"{first}[0] spec.dependsOn[0]: dependsOn names 'ghost', which no manifest declares",
        f"{second}[0] spec: unknown field(s) ('colour' was unexpected)"]


# --- ${VAR} expansion and secrets -------------------------------------------------------------------------

def test_a_default_is_used_when_the_variable_is_unset(write_manifest: WriteManifest) -> None:
    path = write_manifest(server("a", "env:\n  REGION: ${REGION:-eu-west-1}\n  EMPTY: ${UNSET:-}"))
    spec = load(path).by_name["a"]
    assert dict(spec.env) == {"REGION": "eu-west-1", "EMPTY": ""}
    assert load(path, environ={"REGION": "us-east-2"}).by_name["a"].env["REGION"] == "us-east-2"


def test_a_value_from_a_variable_is_a_secret(write_manifest: WriteManifest) -> None:
    path = write_manifest(server("a", "env:\n  API_KEY: ${API_KEY}\n  URL: https://api/${API_KEY}/x\n  TZ: UTC"))
    spec = load(path, environ={"API_KEY": SECRET}).by_name["a"]
    assert spec.env["API_KEY"] == SECRET
    assert spec.env["URL"] == f"https://api/{SECRET}/x"
    assert spec.secret_keys == {"API_KEY", "URL"}


def test_a_double_dollar_is_a_literal_dollar_and_not_a_secret(write_manifest: WriteManifest) -> None:
    path = write_manifest(server("a", "env:\n  PRICE: 5$$\n  TEMPLATE: $${HOME}/x"))
    spec = load(path, environ={"HOME": "/root"}).by_name["a"]
    assert dict(spec.env) == {"PRICE": "5$", "TEMPLATE": "${HOME}/x"}
    assert spec.secret_keys == frozenset()


def test_scalar_env_values_become_strings(write_manifest: WriteManifest) -> None:
    path = write_manifest(server("a", "env:\n  PORT: 8080\n  DEBUG: true"))
    assert dict(load(path).by_name["a"].env) == {"PORT": "8080", "DEBUG": "true"}


def test_env_file_values_are_secrets_and_plain_values_override_them(write_manifest: WriteManifest) -> None:
    write_manifest("TOKEN=sk-from-envfile\nSHARED=from-file\n", "app.env")
    path = write_manifest(server("a", "envFile: app.env\nenv:\n  SHARED: plain\n  DERIVED: x-${TOKEN}"))
    spec = load(path).by_name["a"]
    assert dict(spec.env) == {"TOKEN": "sk-from-envfile", "SHARED": "plain", "DERIVED": "x-sk-from-envfile"}
    assert spec.secret_keys == {"TOKEN", "DERIVED"}
    assert sorted(spec.secret_values()) == ["sk-from-envfile", "x-sk-from-envfile"]


def test_a_missing_env_file_is_a_problem(write_manifest: WriteManifest) -> None:
    path = write_manifest(server("a", "envFile: missing.env"))
    assert messages(load(path)) == [
        f"{path}[0] spec.envFile: envFile {str(path.parent / 'missing.env')!r} does not exist"]


def test_secret_env_marks_plain_values_secret(write_manifest: WriteManifest) -> None:
    path = write_manifest(server("a", "secretEnv: [TOKEN]\nenv:\n  TOKEN: plain-but-secret\n  TZ: UTC"))
    spec = load(path).by_name["a"]
    assert spec.secret_keys == {"TOKEN"}
    assert spec.secret_values() == ["plain-but-secret"]


def test_a_read_only_load_takes_an_unset_variable_as_empty_instead_of_a_problem(write_manifest: WriteManifest) -> None:
    path = write_manifest(server("a", "endpointAuth: {tokenEnv: EP}\nenv:\n  EP: ${UNSET_TOKEN}\n  K: ${UNSET_KEY}"))
    assert [p.json_path for p in load(path).problems] == ["spec.env.EP"]
    lenient = load_manifests([str(path)], environ={}, key=b"k" * 32, unset_vars_ok=True)
    assert lenient.problems == [] and dict(lenient.by_name["a"].env) == {"EP": "", "K": ""}


def test_the_endpoint_token_comes_from_env_and_is_always_a_secret(write_manifest: WriteManifest) -> None:
    path = write_manifest(server("a", "endpointAuth: {tokenEnv: EP_TOKEN}\nenv:\n  EP_TOKEN: literal-token-1"))
    spec = load(path).by_name["a"]
    assert (spec.token_env, spec.endpoint_token) == ("EP_TOKEN", "literal-token-1")
    assert spec.secret_keys == {"EP_TOKEN"}


def test_an_endpoint_token_env_that_names_no_env_entry_is_a_problem(write_manifest: WriteManifest) -> None:
    path = write_manifest(server("a", "endpointAuth: {tokenEnv: EP_TOKEN}\nenv:\n  TZ: UTC"))
    assert messages(load(path)) == [f"{path}[0] spec.endpointAuth.tokenEnv: names 'EP_TOKEN', which spec.env does "
                                    "not set (add EP_TOKEN: ${VAR} to spec.env)"]


def test_a_rotated_endpoint_token_changes_the_runtime_generation(write_manifest: WriteManifest) -> None:
    path = write_manifest(server("a", "endpointAuth: {tokenEnv: EP_TOKEN}\nenv:\n  EP_TOKEN: ${TOK}"))
    first = load(path, environ={"TOK": "one-token"}).by_name["a"]
    second = load(path, environ={"TOK": "two-token"}).by_name["a"]
    assert first.runtime_generation != second.runtime_generation
    assert "one-token" not in first.runtime_generation


def test_a_variable_in_args_is_refused(write_manifest: WriteManifest) -> None:
    path = write_manifest(server("a", 'args: ["--token=${API_KEY}"]'))
    result = load(path, environ={"API_KEY": SECRET})
    assert messages(result) == [f"{path}[0] spec.args[0]: ${{VAR}} is only expanded in spec.env values: "
                                "pass secrets through env, never on the command line"]
    assert result.blocked == {"a"}


@pytest.mark.parametrize(("body", "where"), [
    pytest.param('command: [node, server.js]\nargs: ["--token=${API_KEY}"]', "spec.args[0]",
                 id="args after a command"),
    pytest.param('command: [node, "${API_KEY}"]', "spec.command[1]", id="in the command"),
])
def test_a_variable_on_the_command_line_is_located_by_its_own_path(
        write_manifest: WriteManifest, body: str, where: str) -> None:
    path = write_manifest(server("a", body))
    [problem] = load(path, environ={"API_KEY": SECRET}).problems
    assert problem.json_path == where


# --- paths and discovery ----------------------------------------------------------------------------------

def test_a_relative_source_path_and_env_file_resolve_against_the_manifest_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = load(FIXTURES / "local" / "local.yaml").by_name["local"]
    assert spec.source == Source("path", str(FIXTURES / "local" / "server.py"))
    assert spec.command == ("python3",)
    assert spec.env["LOCAL_TOKEN"] == "sk-envfile-SECRET-67890"
    assert spec.secret_keys == {"LOCAL_TOKEN"}


def test_a_relative_manifest_path_still_resolves_sources_against_its_directory(
        write_manifest: WriteManifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_manifest(server("a", source="{path: ../servers/srv.py}"))
    (tmp_path / "servers").mkdir()
    (tmp_path / "servers" / "srv.py").write_text("")
    monkeypatch.chdir(tmp_path)
    spec = load("manifests/manifest.yaml").by_name["a"]
    assert spec.source.ref == str(tmp_path / "servers" / "srv.py")


def test_a_directory_is_loaded_in_sorted_path_order_skipping_hidden_and_other_files() -> None:
    result = load(FIXTURES / "ordered")
    assert result.problems == []
    assert [s.name for s in result.specs] == ["zeta", "alpha", "beta", "mid"]
    assert [(s.origin.file, s.origin.doc_index) for s in result.specs][1:3] == [
        (str(FIXTURES / "ordered" / "2-alpha.yml"), 0), (str(FIXTURES / "ordered" / "2-alpha.yml"), 1)]


def test_a_file_given_twice_is_loaded_once_where_it_is_first_met(
        write_manifest: WriteManifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    time = write_manifest(server("time"), "time.yaml")
    write_manifest(server("zeta"), "zeta.yaml")
    monkeypatch.chdir(tmp_path)
    result = load("manifests", time, "manifests/./time.yaml")
    assert result.problems == []
    assert [(s.name, s.origin.file) for s in result.specs] == [
        ("time", "manifests/time.yaml"), ("zeta", "manifests/zeta.yaml")]


def test_dev_null_holds_no_servers_and_no_problem() -> None:
    result = load("/dev/null")
    assert (result.specs, result.problems, result.blocked, result.broken_files) == ([], [], set(), set())


def test_empty_documents_are_skipped_but_keep_their_index(write_manifest: WriteManifest) -> None:
    path = write_manifest("---\n# nothing here\n---\n" + server("a"))
    spec = load(path).by_name["a"]
    assert spec.origin.doc_index == 1


def test_defaults_fill_in_the_spec(write_manifest: WriteManifest) -> None:
    spec = load(write_manifest(server("a"))).by_name["a"]
    assert (spec.transport, spec.path, spec.desired_state.value, spec.restart_policy.value) == (
        "stdio", "/mcp", "running", "Always")
    assert (spec.health.failure_threshold, spec.restart_backoff.max_s, spec.tests.gate) == (3, 60.0, False)


def test_the_bundled_manifests_load_without_problems() -> None:
    result = load(Path(__file__).resolve().parents[2] / "manifests")
    assert result.problems == []
    assert sorted(result.by_name) == ["everything", "time"]
