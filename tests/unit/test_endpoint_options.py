"""The endpoint settings of a manifest (sessions, maxSessions, sessionIdleSeconds, requestTimeoutSeconds,
holdRequestsSeconds): parsed with their defaults, refused with a located problem, passed to the runner, and
counted in the runtime generation only when set (so upgrading mcp-reconcile restarts nothing)."""

from __future__ import annotations

from pathlib import Path

from mcp_reconcile.effects import _endpoint_args
from mcp_reconcile.manifest import load_manifests

HEADER = "apiVersion: mcp-reconcile/v1\nkind: MCPServer\nmetadata: {name: srv}\nspec:\n  source: {npm: pkg@1.0.0}\n"


def _load(tmp_path: Path, extra: str = ""):  # type: ignore[no-untyped-def]
    path = tmp_path / "srv.yaml"
    path.write_text(HEADER + "".join(f"  {line}\n" for line in extra.splitlines()))
    return load_manifests([str(path)], environ={}, key=b"k" * 32)


def test_defaults_are_one_shared_server_and_a_300_s_request_timeout(tmp_path: Path) -> None:
    spec = _load(tmp_path).specs[0]
    assert (spec.sessions, spec.max_sessions, spec.session_idle_s, spec.request_timeout_s) == \
        ("shared", 32, 600.0, 300.0)


def test_isolated_sessions_and_their_bounds_reach_the_runner_flags(tmp_path: Path) -> None:
    spec = _load(tmp_path, "sessions: isolated\nmaxSessions: 5\nsessionIdleSeconds: 60\n"
                           "requestTimeoutSeconds: 900\nholdRequestsSeconds: 10").specs[0]
    flags = _endpoint_args(spec)
    pairs = dict(zip(flags[::2], flags[1::2], strict=True))
    assert pairs == {"--hold-seconds": "10.0", "--request-timeout": "900.0", "--sessions": "isolated",
                     "--max-sessions": "5", "--session-idle": "60.0"}


def test_a_bad_value_is_a_problem_naming_the_field(tmp_path: Path) -> None:
    result = _load(tmp_path, "sessions: per-request\nmaxSessions: 0")
    text = " ".join(str(p) for p in result.problems)
    assert not result.specs
    assert "spec.sessions" in text and "spec.maxSessions" in text


def test_unset_settings_leave_the_generation_as_it_was_and_a_set_one_changes_it(tmp_path: Path) -> None:
    plain = _load(tmp_path).specs[0]
    explicit_default = _load(tmp_path, "sessions: shared").specs[0]
    isolated = _load(tmp_path, "sessions: isolated").specs[0]
    assert "endpointOptions" not in plain.digests   # what existing manifests hash to is unchanged
    assert isolated.runtime_generation != plain.runtime_generation
    assert explicit_default.runtime_generation != isolated.runtime_generation
