"""Hostile input is bounded: every case a fuzz campaign found is one listed problem, quickly, and never a
traceback, a hang, gigabytes, or an aborted command for the other files."""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from mcp_reconcile import safeload
from mcp_reconcile.errors import ManifestError
from mcp_reconcile.formats import load_foreign
from mcp_reconcile.manifest import LoadResult, load_manifests

KEY = b"k" * 32
HEAD = "apiVersion: mcp-reconcile/v1\nkind: MCPServer\nmetadata: {name: a}\nspec:\n  source: {npm: \"a@1.0.0\"}\n"
GOOD = "apiVersion: mcp-reconcile/v1\nkind: MCPServer\nmetadata: {name: good}\nspec: {source: {npm: \"g@1.0.0\"}}\n"
# Generous bounds for a shared 2-core box: the unbounded loader took > 30 s and > 1 GB on the bomb.
BOMB_SECONDS = 5.0
BOMB_PEAK_BYTES = 50 * 1024 * 1024
RunCli = Callable[[Sequence[str]], tuple[int, str, str]]


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The fuzzer's 633-byte file: `levels` anchors under spec.env, each a list of `width` aliases of the last."""
    lines = [HEAD.rstrip("\n"), "  env:", f"    a0: &a0 [{', '.join(['x'] * width)}]"]
    lines += [f"    a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def load_text(tmp_path: Path, text: str | bytes, name: str = "m.yaml") -> tuple[Path, LoadResult]:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path, load_manifests([str(path)], environ={}, key=KEY)


def only_problem(result: LoadResult) -> ManifestError:
    assert len(result.problems) == 1, [str(p) for p in result.problems]
    return result.problems[0]


# ---- YAML ----------------------------------------------------------------------------------------------

def test_an_alias_bomb_is_one_problem_in_well_under_a_second_with_bounded_memory(tmp_path: Path) -> None:
    text = alias_bomb()
    assert len(text) < 700
    tracemalloc.start()
    started = time.perf_counter()
    try:
        path, result = load_text(tmp_path, text)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    problem = only_problem(result)
    assert (problem.file, problem.reason) == (
        str(path), f"invalid YAML: more than {safeload.MAX_NODES} nodes once aliases are expanded")
    assert problem.line in range(7, 15)   # at the alias that passes the budget
    assert elapsed < BOMB_SECONDS and peak < BOMB_PEAK_BYTES, (elapsed, peak)
    assert result.broken_files == {str(path)}


def test_a_few_aliases_within_the_budget_still_load(tmp_path: Path) -> None:
    text = HEAD + "  env: &e {TZ: UTC}\n---\n" + HEAD.replace("name: a", "name: b") + "  env: {TZ: UTC}\n"
    _, result = load_text(tmp_path, text.replace("  env: {TZ: UTC}\n", "  env: {<<: *e}\n", 0))
    assert result.problems == []


def test_an_alias_inside_its_own_anchor_is_refused_rather_than_building_a_cycle(tmp_path: Path) -> None:
    path, result = load_text(tmp_path, HEAD + "  args: &loop [a, *loop]\n")
    assert str(only_problem(result)) == (f"{path}:6: invalid YAML: alias *loop is used inside its own anchor "
                                         "(a recursive structure)")


@pytest.mark.parametrize(("value", "reason"), [
    pytest.param("!!int abc", "'abc' is not a valid !!int", id="an int tag on a word"),
    pytest.param("!!float abc", "'abc' is not a valid !!float", id="a float tag on a word"),
    pytest.param("!!bool maybe", "'maybe' is not a valid !!bool", id="a bool tag on a word"),
    pytest.param("!!int " + "9" * 5000, "is not a valid !!int", id="an int of more digits than Python converts"),
    pytest.param("!!int", "'' is not a valid !!int", id="an int tag on nothing"),
    pytest.param('"\\U99999999"', "invalid YAML: ", id="an escape beyond unicode"),
    pytest.param("!!timestamp abc", "tag 'tag:yaml.org,2002:timestamp' is not allowed", id="a timestamp tag"),
    pytest.param("!!timestamp 2024-01-01", "tag 'tag:yaml.org,2002:timestamp' is not allowed",
                 id="a valid timestamp is refused as well"),
    pytest.param("!!binary aGVsbG8=", "tag 'tag:yaml.org,2002:binary' is not allowed", id="a binary tag"),
    pytest.param("!!set {a: null}", "tag 'tag:yaml.org,2002:set' is not allowed", id="a set tag"),
    pytest.param("!!python/object/apply:os.system [echo hi]",
                 "tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed", id="a python tag"),
    pytest.param("!local x", "tag '!local' is not allowed", id="a local tag"),
])
def test_a_tag_outside_the_core_schema_or_a_value_it_cannot_hold_is_a_problem(
        tmp_path: Path, value: str, reason: str) -> None:
    path, result = load_text(tmp_path, HEAD + f"  port: {value}\n")
    problem = only_problem(result)
    assert (problem.file, problem.line) == (str(path), 6)
    assert problem.reason.startswith("invalid YAML: ") and reason in problem.reason


def test_a_plain_date_stays_a_string_as_in_the_core_schema(tmp_path: Path) -> None:
    _, result = load_text(tmp_path, HEAD + "  env: {SINCE: 2024-01-01}\n")
    assert result.problems == []
    assert result.by_name["a"].env["SINCE"] == "2024-01-01"


def test_a_key_that_is_not_a_string_is_a_problem(tmp_path: Path) -> None:
    path, result = load_text(tmp_path, HEAD + "  env: {NO: x}\n")
    assert str(only_problem(result)) == f"{path}:6: invalid YAML: the key False is not a string: quote it"


@pytest.mark.parametrize("opening", ["[", "{a: "])
def test_a_thousand_nested_brackets_are_one_problem(tmp_path: Path, opening: str) -> None:
    _, result = load_text(tmp_path, HEAD + "  args: " + opening * 1000 + "\n")
    assert only_problem(result).reason == f"invalid YAML: nested more than {safeload.MAX_DEPTH} levels deep"


def test_a_file_larger_than_the_bound_is_a_problem_before_it_is_parsed(tmp_path: Path) -> None:
    path, result = load_text(tmp_path, HEAD + "# " + "x" * safeload.MAX_FILE_BYTES + "\n")
    assert str(only_problem(result)) == f"{path}: larger than {safeload.MAX_FILE_BYTES // 1024} KiB"


def test_a_nul_byte_in_the_file_is_a_problem(tmp_path: Path) -> None:
    _, result = load_text(tmp_path, HEAD.encode() + b"  args: [a\0b]\n")
    assert "invalid YAML" in only_problem(result).reason


def test_a_file_that_is_not_utf8_is_a_problem(tmp_path: Path) -> None:
    _, result = load_text(tmp_path, HEAD.encode() + b"  args: [\xff\xfe]\n")
    assert "invalid YAML" in only_problem(result).reason


# ---- paths ---------------------------------------------------------------------------------------------

def test_a_nul_byte_in_source_path_is_a_problem_at_that_path(tmp_path: Path) -> None:
    text = HEAD.replace('{npm: "a@1.0.0"}', '{path: "srv\\0.py"}')
    path, result = load_text(tmp_path, text)
    assert str(only_problem(result)) == f"{path}[0] spec.source.path: the path contains a NUL byte"


@pytest.mark.parametrize(("field", "value"), [
    pytest.param("args", '["a\\0b"]', id="an arg"),
    pytest.param("env", '{A: "x\\0y"}', id="an env value"),
    pytest.param("command", '["run\\0"]', id="a command word"),
])
def test_a_nul_byte_that_would_reach_exec_is_a_problem(tmp_path: Path, field: str, value: str) -> None:
    _, result = load_text(tmp_path, HEAD + f"  {field}: {value}\n")
    assert only_problem(result).reason == "contains a NUL byte"


def test_an_env_file_that_is_proc_self_mem_is_a_problem_not_an_aborted_command(tmp_path: Path) -> None:
    path, result = load_text(tmp_path, HEAD + "  envFile: /proc/self/mem\n")
    problem = only_problem(result)
    assert (problem.file, problem.doc_index, problem.json_path) == (str(path), 0, "spec.envFile")
    assert "cannot read: Input/output error" in problem.reason


@pytest.mark.parametrize(("target", "reason"), [
    pytest.param("/dev/zero", "not a regular file (a character device)", id="an endless device"),
    pytest.param(".", "not a regular file (a directory)", id="a directory"),
    pytest.param("fifo", "not a regular file (a FIFO)", id="a FIFO that would block forever"),
])
def test_an_env_file_that_is_not_a_regular_file_is_a_problem(tmp_path: Path, target: str, reason: str) -> None:
    os.mkfifo(tmp_path / "fifo")
    _, result = load_text(tmp_path, HEAD + f"  envFile: {target}\n")
    assert reason in only_problem(result).reason


def test_an_over_long_env_file_path_is_a_problem(tmp_path: Path) -> None:
    long_path = "/" + "a" * 5000
    _, result = load_text(tmp_path, HEAD + f"  envFile: {long_path}\n")
    assert only_problem(result).reason == f"the path is 5001 bytes long (at most {safeload.MAX_PATH_BYTES})"


def test_a_name_too_long_for_the_filesystem_is_a_problem(tmp_path: Path) -> None:
    _, result = load_text(tmp_path, HEAD + f"  envFile: /{'a' * 300}/b.env\n")
    assert "File name too long" in only_problem(result).reason


def test_an_env_file_larger_than_the_bound_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "big.env").write_text("A=" + "x" * safeload.MAX_FILE_BYTES + "\n")
    _, result = load_text(tmp_path, HEAD + "  envFile: big.env\n")
    assert only_problem(result).reason.endswith(f"larger than {safeload.MAX_FILE_BYTES // 1024} KiB")


def test_an_env_file_name_no_environment_can_hold_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "app.env").write_text("A=1\n'A=B'=1\n")
    _, result = load_text(tmp_path, HEAD + "  envFile: app.env\n")
    problem = only_problem(result)
    assert problem.json_path == "spec.envFile" and "a name with '='" in problem.reason


def test_a_fifo_given_as_a_manifest_is_a_problem_and_the_other_files_still_load(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    (tmp_path / "good.yaml").write_text(GOOD)
    result = load_manifests([str(fifo), str(tmp_path / "good.yaml")], environ={}, key=KEY)
    assert [str(p) for p in result.problems] == [f"{fifo}: not a regular file (a FIFO)"]
    assert [s.name for s in result.specs] == ["good"]


def test_an_over_long_manifest_path_is_a_problem_and_the_other_files_still_load(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    result = load_manifests(["/" + "m" * 300 + ".yaml", "x\0.yaml", str(tmp_path / "good.yaml")],
                            environ={}, key=KEY)
    assert len(result.problems) == 2
    assert [s.name for s in result.specs] == ["good"]


def test_every_hostile_file_is_listed_and_the_good_one_beside_them_loads(tmp_path: Path) -> None:
    files = {"1-bomb.yaml": alias_bomb(), "2-int.yaml": HEAD + "  port: !!int abc\n",
             "3-nest.yaml": HEAD + "  args: " + "[" * 1000 + "\n", "4-mem.yaml": HEAD + "  envFile: /proc/self/mem\n",
             "5-good.yaml": GOOD}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    result = load_manifests([str(tmp_path)], environ={}, key=KEY)
    assert [Path(p.file or "").name for p in result.problems] == ["1-bomb.yaml", "2-int.yaml", "3-nest.yaml",
                                                                  "4-mem.yaml"]
    assert [s.name for s in result.specs] == ["good"]


# ---- JSON and the foreign formats --------------------------------------------------------------------

def write_json(tmp_path: Path, text: str, name: str = "cfg.json") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_list_where_a_legacy_type_belongs_is_a_problem(tmp_path: Path) -> None:
    path = write_json(tmp_path, '{"servers": {"a": {"type": []}}}')
    with pytest.raises(ManifestError) as info:
        load_foreign(path)
    assert info.value.file == str(path) and info.value.json_path == "servers.a.type"


@pytest.mark.parametrize("depth", [100, 100_000])
def test_deeply_nested_json_is_one_problem(tmp_path: Path, depth: int) -> None:
    path = write_json(tmp_path, '{"servers": ' + "[" * depth + "]" * depth + "}")
    with pytest.raises(ManifestError) as info:
        load_foreign(path)
    assert str(info.value) == f"{path}: nested more than {safeload.MAX_DEPTH} levels deep"


def test_an_integer_of_more_digits_than_python_converts_is_a_json_problem(tmp_path: Path) -> None:
    path = write_json(tmp_path, '{"mcpServers": {"a": {"command": "npx", "args": [' + "9" * 5000 + "]}}}")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_foreign(path)


def test_a_foreign_config_larger_than_the_bound_is_a_problem(tmp_path: Path) -> None:
    path = write_json(tmp_path, '{"mcpServers": {}, "pad": "' + "x" * safeload.MAX_FILE_BYTES + '"}')
    with pytest.raises(ManifestError, match="larger than"):
        load_foreign(path)


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param('{"servers": {"a": {"type": []}}}', "cfg.json servers.a.type: ", id="a list as a legacy type"),
    pytest.param('{"servers": ' + "[" * 100_000 + "]" * 100_000 + "}", "cfg.json: nested more than",
                 id="a hundred thousand nested lists"),
])
def test_import_of_the_fuzzed_json_cases_exits_1_with_the_problem(
        tmp_path: Path, run_cli: RunCli, text: str, expected: str) -> None:
    path = write_json(tmp_path, text)
    code, out, err = run_cli(["import", str(path)])
    assert (code, out) == (1, "")
    assert err.startswith(f"error: {tmp_path}/{expected}") and "Traceback" not in err


# ---- the CLI -----------------------------------------------------------------------------------------

def test_validate_lists_each_problem_as_file_doc_path_reason_and_exits_1(tmp_path: Path, run_cli: RunCli) -> None:
    (tmp_path / "a.yaml").write_text(HEAD.replace('{npm: "a@1.0.0"}', '{path: "srv\\0.py"}'))
    (tmp_path / "b.yaml").write_text(alias_bomb().replace("name: a", "name: b"))
    code, _, err = run_cli(["validate", "-f", str(tmp_path)])
    bomb_line = load_manifests([str(tmp_path / "b.yaml")], environ={}, key=KEY).problems[0].line
    assert code == 1
    assert err.splitlines() == [
        f"error: {tmp_path}/a.yaml[0] spec.source.path: the path contains a NUL byte",
        f"error: {tmp_path}/b.yaml:{bomb_line}: invalid YAML: more than {safeload.MAX_NODES} nodes once aliases "
        "are expanded"]


def test_validate_json_output_carries_the_fields_of_each_problem(tmp_path: Path, run_cli: RunCli) -> None:
    (tmp_path / "a.yaml").write_text(HEAD + "  envFile: /proc/self/mem\n")
    code, out, _ = run_cli(["validate", "-f", str(tmp_path), "-o", "json"])
    [problem] = json.loads(out)["problems"]
    assert code == 1
    assert (problem["file"], problem["document"], problem["path"]) == (str(tmp_path / "a.yaml"), 0, "spec.envFile")
