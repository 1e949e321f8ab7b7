"""Fuzzing the loaders: any manifest, envFile or foreign config (legacy, mcpServers, VS Code, registry
server.json) gives listed problems, never an exception or a hang.

Each target goes through the public entry points (`load_manifests`, `load_foreign`, `import_config`) with
structured documents that are then mutated with hostile snippets (anchors and aliases, tags, deep
brackets, NUL bytes, huge numbers, comments), and with raw token soup. Every example runs under a
hypothesis deadline and a hard SIGALRM stop, so a hang fails with its example instead of stalling.

The default run is a few hundred examples in all (deterministic). The chaos run is

    MCPR_FUZZ_EXAMPLES=10000 .venv/bin/pytest tests/unit/test_fuzz_inputs.py -s

(random, split evenly over the targets; tests/chaos/README.md).
"""

from __future__ import annotations

import io
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_reconcile import cli
from mcp_reconcile.errors import ManifestError
from mcp_reconcile.formats import Converted, load_foreign
from mcp_reconcile.importer import import_config
from mcp_reconcile.manifest import LoadResult, load_manifests
from mcp_reconcile.model import API_VERSION, KIND

TARGETS = 8                                   # fuzz tests in this module; the examples are split over them
EXAMPLES = int(os.environ.get("MCPR_FUZZ_EXAMPLES", "0")) or 320   # in all
EXAMPLE_DEADLINE = timedelta(seconds=5)       # hypothesis fails an example slower than this (a near-hang)
HARD_STOP_S = 30.0                            # an example still running after this is a hang: stopped, failed
KEY = b"k" * 32
ENVIRON = {"API_KEY": "k-123", "HOME": "/nonexistent"}

FUZZ = settings(max_examples=max(1, EXAMPLES // TARGETS), deadline=EXAMPLE_DEADLINE, database=None,
                derandomize="MCPR_FUZZ_EXAMPLES" not in os.environ, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example, HealthCheck.function_scoped_fixture])
STATS: Counter[str] = Counter()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One directory for every example (files are overwritten), with a FIFO an envFile may name."""
    path = tmp_path_factory.mktemp("fuzz")
    os.mkfifo(path / "fifo")
    yield path
    print(f"\nfuzz: {STATS['examples']} examples, {STATS['problems']} problems listed, "
          f"{STATS['loaded']} specs loaded, {STATS['converted']} foreign files converted, "
          f"{STATS['exceptions']} exceptions (counted while shrinking too)")


@contextmanager
def counted() -> Iterator[None]:
    """Count an example that raised, so the tally says so (hypothesis re-raises it)."""
    try:
        yield
    except BaseException:
        STATS.update(exceptions=1)
        raise


@contextmanager
def hard_stop(seconds: float = HARD_STOP_S) -> Iterator[None]:
    """Raise TimeoutError in a hung example; pytest-timeout's own alarm is saved and put back."""
    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"no result after {seconds} s: the loader hangs on this input")

    outer_remaining, outer_interval = signal.getitimer(signal.ITIMER_REAL)
    previous = signal.signal(signal.SIGALRM, expire)
    started = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_remaining:
            left = max(outer_remaining - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, outer_interval)


# ---- the checks -------------------------------------------------------------------------------------

def check_load(path: Path) -> LoadResult:
    """load_manifests returns (never raises), and every problem is located in the file and printable."""
    with counted(), hard_stop():
        result = load_manifests([str(path)], environ=ENVIRON, key=KEY)
    for problem in result.problems:
        assert isinstance(problem, ManifestError) and problem.file, problem
        assert str(problem)
    STATS.update(examples=1, problems=len(result.problems), loaded=len(result.specs))
    return result


def check_foreign(path: Path) -> None:
    """load_foreign converts or raises ManifestError; import exits 0 or 1; --config loads as a manifest."""
    with counted(), hard_stop():
        try:
            converted = load_foreign(path)
        except ManifestError as exc:
            assert exc.file and str(exc)
        else:
            assert isinstance(converted, Converted)
            STATS.update(converted=1)
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = import_config(cli.parse(["import", str(path)]))
        assert code in (0, 1), err.getvalue()
        assert "Traceback" not in err.getvalue()
    check_load(path)


# ---- strategies -------------------------------------------------------------------------------------

def mostly(good: st.SearchStrategy, wild: st.SearchStrategy) -> st.SearchStrategy:
    """Two draws in three well-formed (so the loaders run deep), one wild (so the checks are hit)."""
    return st.one_of(good, good, wild)


STRINGS = ["", " ", "a", "x" * 300, "\0", "a\0b", "${API_KEY}", "${UNSET}", "${UNSET:-d}", "$$", "${", "~", "..",
           "/", "/proc/self/mem", "/dev/zero", "2024-01-01", "0x1F", "1e99999", "yes", "NO", "null", "\ufeff", "\x85"]
leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12),
                   st.sampled_from(STRINGS))
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=12)
names = st.one_of(st.sampled_from(["a", "b", "time", "my-server", "My Server", "x_1"]), st.text(max_size=10))
env_names = st.one_of(st.sampled_from(["TZ", "API_KEY", "TOKEN", "bad-name", "1X", ""]), st.text(max_size=8))


def mutated(text: str, snippets: list[str]) -> st.SearchStrategy[str]:
    """`text` as it is (two draws in three), or with one to four snippets inserted at arbitrary places."""
    edits = mostly(st.just([]), st.lists(st.tuples(st.integers(0, 1 << 20), st.sampled_from(snippets)),
                                         min_size=1, max_size=4))

    def apply(edits_: list[tuple[int, str]]) -> str:
        out = text
        for at, snippet in edits_:
            at %= len(out) + 1
            out = out[:at] + snippet + out[at:]
        return out

    return edits.map(apply)


YAML_SNIPPETS = ["&a ", "*a", "&b [*a, *a, *a, *a]", "*b", "!!int ", "!!float ", "!!bool ", "!!str ", "!!null ",
                 "!!timestamp ", "!!binary ", "!!set ", "!!omap ", "!!pairs ", "!!python/object/apply:os.system ",
                 "!local ", "<<: *a\n", "? ", ": ", "- ", "[", "]", "{", "}", "[" * 300, "{a: " * 100, "---\n",
                 "...\n", "%YAML 1.1\n", "%TAG ! tag:x,2000:\n", "\t", "\0", "\\0", '"\\0"', "\ufeff", "#", "|\n",
                 ">-\n", "'", '"', ",", "\n  ", "~", "2024-01-01", "9" * 5000, ".nan", "=", "${API_KEY}", "\xff"]
SOURCES = st.one_of(st.sampled_from([{"npm": "pkg-a@1.0.0"}, {"pypi": "mcp-server-time==1.0"}, {"path": "srv.py"},
                                     {"path": "x\0.py"}, {"path": "/" + "p" * 5000}, {"path": "."}, {}]), values)
SPECS = st.fixed_dictionaries({"source": SOURCES}, optional={
    "command": st.one_of(st.text(max_size=12), st.lists(st.text(max_size=8), max_size=3), leaves),
    "args": st.lists(leaves, max_size=4), "env": st.dictionaries(env_names, leaves, max_size=4),
    "envFile": st.sampled_from(["/proc/self/mem", "fifo", ".", "/dev/zero", "x\0", "/" + "e" * 5000, "gone.env"]),
    "cwd": leaves, "transport": leaves, "port": leaves, "path": leaves, "desiredState": leaves,
    "restartPolicy": leaves, "restartBackoff": values, "health": values, "dependsOn": st.lists(names, max_size=3),
    "tests": values, "endpointAuth": values, "secretEnv": values, "sessions": leaves})
GOOD_SPECS = st.fixed_dictionaries({"source": st.sampled_from([{"npm": "pkg-a@1.0.0"}, {"pypi": "mcp-server-time==1"},
                                                                 {"path": "m.yaml"}, {"path": "x\0"}])}, optional={
    "command": st.sampled_from(["python3", "node x.js", "'bad", ["a", "b\0"]]),
    "args": st.lists(st.sampled_from(["a", "${API_KEY}", "1", "x\0"]), max_size=3),
    "env": st.dictionaries(st.sampled_from(["TZ", "API_KEY", "T"]), st.sampled_from(
        ["UTC", "${API_KEY}", "${UNSET}", "${UNSET:-d}", "$$", "a\0"]), max_size=3),
    "envFile": st.sampled_from(["app.env", "/proc/self/mem", "fifo", ".", "x\0"]),
    "dependsOn": st.lists(st.sampled_from(["a", "b", "c"]), max_size=2),
    "endpointAuth": st.fixed_dictionaries({"tokenEnv": st.sampled_from(["API_KEY", "NOPE"])}),
    "restartBackoff": st.fixed_dictionaries({"initialSeconds": st.sampled_from([1, 5]),
                                             "maxSeconds": st.sampled_from([1, 60])}),
    "port": st.sampled_from([24001, 24002]), "desiredState": st.sampled_from(["running", "stopped"])})
DOCUMENTS = st.fixed_dictionaries({
    "apiVersion": st.one_of(st.just(API_VERSION), leaves), "kind": st.one_of(st.just(KIND), leaves),
    "metadata": mostly(st.fixed_dictionaries({"name": st.sampled_from(["a", "b", "c"])}),
                       st.one_of(st.fixed_dictionaries({"name": names}, optional={"labels": values}), values)),
    "spec": mostly(GOOD_SPECS, st.one_of(SPECS, values))})


@st.composite
def manifest_texts(draw: st.DrawFn) -> str:
    documents = draw(st.lists(DOCUMENTS, min_size=1, max_size=3))
    return draw(mutated(yaml.safe_dump_all(documents, allow_unicode=True), YAML_SNIPPETS))


token_soup = st.lists(st.sampled_from([*YAML_SNIPPETS, "a", "b: ", "\n", "apiVersion: mcp-reconcile/v1\n",
                                       "kind: MCPServer\n", "spec:\n  source: "]), max_size=40).map("".join)

DOTENV_SNIPPETS = ["A=1\n", "export B='x'\n", 'C="a\\nb"\n', "D=${A}\n", "E=${HOME}\n", "=\n", "'", '"', "#x\n",
                   "\0", "F G=1\n", "${", "\\", "H=" + "v" * 2000 + "\n", "'A=B'=1\n", "\n"]

COMMANDS = ["npx", "uvx", "uv", "pipx", "node", "python", "python3", "docker", "podman", "/usr/bin/env", "./srv.py",
            "srv.js", "C:\\nodejs\\npx.cmd", "uv run mcp-server-time", "npx -y pkg", "bash", "", " ", "${env:CMD}",
            "${workspaceFolder}/x.py", "'unbalanced"]
ARGS = ["-y", "--yes", "-p", "--package", "--package=x", "run", "tool", "--from", "--with", "--spec", "--directory",
        "/tmp", "-m", "-c", "-e", "-u", "--", "-", "pkg-a", "@s/p@1.0.0", "p@latest", "mcp-server-time",
        "mcp_server_time", "x.py", "x.js", "git+https://h/x", "github:a/b", "./x.tgz", "${VAR}", "${env:X}",
        "${input:tok}", "${workspaceFolder}", "${command:x}", "${", "\0", "a" * 300, "pip", "install"]
good_names = st.sampled_from(["a", "b", "time", "my-server", "My Server", "x_1"])
env_values = st.sampled_from(["UTC", "${API_KEY}", "${env:X}", "${input:tok}", "${UNSET:-d}", "x", "a\0b", "1"])
args = mostly(st.lists(st.sampled_from(ARGS), max_size=6),
              st.lists(st.one_of(st.sampled_from(ARGS), st.text(max_size=8), leaves), max_size=6))
entries = mostly(
    st.fixed_dictionaries({"command": st.sampled_from(COMMANDS)}, optional={
        "args": args, "env": st.dictionaries(st.sampled_from(["TZ", "API_KEY", "TOKEN"]), env_values, max_size=3),
        "envFile": st.sampled_from(["tools.env", "/proc/self/mem", "x\0", "fifo"]),
        "cwd": st.sampled_from(["sub", "/tmp", "${workspaceFolder}", "x\0"]), "disabled": st.booleans(),
        "type": st.sampled_from(["stdio", "http"]), "url": st.sampled_from(["https://u:s3cr3t@h.example/p"])}),
    st.one_of(st.fixed_dictionaries({"command": st.one_of(st.sampled_from(COMMANDS), st.text(max_size=12))},
                                    optional={
        "args": args, "env": st.dictionaries(env_names, leaves, max_size=3), "envFile": st.sampled_from(STRINGS),
        "cwd": st.sampled_from(STRINGS), "url": st.sampled_from(["https://u:s3cr3t@h.example/p", "x", ""]),
        "type": st.one_of(st.sampled_from(["stdio", "http", "sse", "nodejs", "python"]), values),
        "disabled": leaves, "headers": values, "health_check": values, "serverUrl": leaves}), values))
servers = st.dictionaries(mostly(good_names, names), entries, max_size=4)
inputs = st.lists(mostly(
    st.fixed_dictionaries({"id": st.sampled_from(["tok", "api-key", "1x"]), "type": st.just("promptString")},
                          optional={"password": st.booleans(), "default": st.sampled_from(["d", "}", ""])}),
    st.one_of(st.fixed_dictionaries({"id": st.text(max_size=8)}, optional={
        "type": leaves, "password": leaves, "default": leaves, "description": leaves}), values)), max_size=3)
variables = st.dictionaries(st.sampled_from(["tok", "port", "x"]), mostly(
    st.fixed_dictionaries({}, optional={"default": st.sampled_from(["8080", "}", ""]), "isSecret": st.booleans()}),
    st.one_of(st.fixed_dictionaries({}, optional={"default": leaves, "isSecret": leaves}), values)), max_size=2)
package_arguments = mostly(
    st.fixed_dictionaries({"type": st.sampled_from(["positional", "named"])}, optional={
        "name": st.sampled_from(["--port", "--x"]), "value": st.sampled_from(["{tok}", "{port}", "x"]),
        "default": st.sampled_from(["1", "{tok}"]), "isRequired": st.booleans(),
        "valueHint": st.sampled_from(["file"]), "variables": variables}),
    st.one_of(st.fixed_dictionaries({"type": st.one_of(st.sampled_from(["positional", "named"]), leaves)}, optional={
        "name": leaves, "value": st.one_of(st.sampled_from(["{tok}", "x"]), leaves), "default": leaves,
        "isRequired": leaves, "valueHint": leaves, "variables": variables}), values))
environment_variables = mostly(
    st.fixed_dictionaries({"name": st.sampled_from(["API_KEY", "TZ", "bad-name"])}, optional={
        "value": st.sampled_from(["{tok}", "x"]), "default": st.sampled_from(["d", "}"]),
        "isSecret": st.booleans(), "isRequired": st.booleans(), "variables": variables}),
    st.one_of(st.fixed_dictionaries({"name": env_names}, optional={
        "value": leaves, "default": leaves, "isSecret": leaves, "isRequired": leaves, "variables": variables}),
        values))
transports = mostly(
    st.fixed_dictionaries({"type": st.sampled_from(["stdio", "sse", "streamable-http"])}, optional={
        "url": st.sampled_from(["http://localhost:8080/mcp", "http://h:{port}/x", "https://h"])}),
    st.one_of(st.fixed_dictionaries({"type": st.one_of(st.sampled_from(["stdio", "sse"]), leaves)},
                                    optional={"url": leaves}), values))
packages = mostly(
    st.fixed_dictionaries({"registryType": st.sampled_from(["npm", "pypi", "oci"]),
                           "identifier": st.sampled_from(["pkg-a", "@s/p", "mcp-server-time", "Bad Name"])},
                          optional={"version": st.sampled_from(["1.0.0", "latest", ""]), "transport": transports,
                                    "runtimeArguments": st.lists(package_arguments, max_size=1),
                                    "packageArguments": st.lists(package_arguments, max_size=3),
                                    "environmentVariables": st.lists(environment_variables, max_size=3)}),
    st.one_of(st.fixed_dictionaries(
        {"registryType": st.one_of(st.sampled_from(["npm", "pypi", "nuget"]), leaves), "identifier": leaves},
        optional={"version": leaves, "runtimeArguments": values, "transport": transports,
                  "packageArguments": st.lists(package_arguments, max_size=3),
                  "environmentVariables": st.lists(environment_variables, max_size=3)}), values))
registry_server = st.fixed_dictionaries(
    {"name": mostly(st.sampled_from(["io.github.a/weather", "io.github.a/b"]), st.one_of(st.just("x"), leaves))},
    optional={"packages": st.lists(packages, max_size=3), "remotes": st.lists(values, max_size=2),
              "$schema": st.just("https://x/server.schema.json")})
FOREIGN = {
    "mcpservers": st.fixed_dictionaries({"mcpServers": servers}, optional={"globalShortcut": leaves}),
    "legacy": st.fixed_dictionaries({"servers": st.dictionaries(mostly(good_names, names), entries.map(
        lambda e: {**e, "type": "python"} if isinstance(e, dict) else e), max_size=4)}),
    "vscode": st.one_of(st.fixed_dictionaries({"servers": servers}, optional={"inputs": inputs}),
                        st.fixed_dictionaries({"mcp": st.fixed_dictionaries({"servers": servers},
                                                                           optional={"inputs": inputs})})),
    "registry": st.one_of(registry_server, st.fixed_dictionaries({"server": registry_server})),
}
JSON_SNIPPETS = ["//c\n", "/* c */", "/*", "*/", ",", ",]", ",}", "[" * 200, "{\"a\":" * 200, "{", "}", "]", '"',
                 "\\", "\\u0000", "\0", "1e99999", "9" * 5000, "NaN", "-Infinity", "\ufeff", "\ud800", "\xff", "true"]


@st.composite
def foreign_texts(draw: st.DrawFn, fmt: str) -> bytes:
    text = json.dumps(draw(FOREIGN[fmt]), ensure_ascii=draw(st.booleans()))
    return draw(mutated(text, JSON_SNIPPETS)).encode("utf-8", "surrogatepass")


# ---- the targets -------------------------------------------------------------------------------------

@FUZZ
@given(text=manifest_texts())
def test_a_mutated_manifest_is_problems_never_an_exception(workdir: Path, text: str) -> None:
    path = workdir / "m.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    check_load(path)


@FUZZ
@given(data=st.one_of(token_soup.map(str.encode), st.binary(max_size=600)))
def test_any_bytes_as_a_manifest_are_problems_never_an_exception(workdir: Path, data: bytes) -> None:
    path = workdir / "raw.yaml"
    path.write_bytes(data)
    check_load(path)


@FUZZ
@given(content=st.one_of(st.lists(st.sampled_from(DOTENV_SNIPPETS), max_size=20).map("".join).map(str.encode),
                         st.binary(max_size=300)), env=st.dictionaries(env_names, leaves, max_size=3))
def test_any_env_file_is_problems_never_an_exception(workdir: Path, content: bytes, env: dict) -> None:
    (workdir / "app.env").write_bytes(content)
    doc = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "a"},
           "spec": {"source": {"npm": "pkg-a@1.0.0"}, "envFile": "app.env", "env": env}}
    path = workdir / "env.yaml"
    path.write_text(yaml.safe_dump(doc))
    check_load(path)


@pytest.mark.parametrize("fmt", sorted(FOREIGN))
@FUZZ
@given(data=st.data())
def test_a_mutated_foreign_config_is_problems_never_an_exception(workdir: Path, fmt: str, data: st.DataObject) -> None:
    path = workdir / f"{fmt}.json"
    path.write_bytes(data.draw(foreign_texts(fmt)))
    check_foreign(path)


@FUZZ
@given(text=st.lists(st.sampled_from([*JSON_SNIPPETS, '"mcpServers"', '"servers"', ":", '"command"', '"npx"', "[]",
                                      "{}", "null", '"name"', '"packages"']), max_size=40))
def test_json_token_soup_as_a_foreign_config_is_problems_never_an_exception(workdir: Path, text: list[str]) -> None:
    path = workdir / "soup.json"
    path.write_bytes("".join(text).encode("utf-8", "surrogatepass"))
    check_foreign(path)
