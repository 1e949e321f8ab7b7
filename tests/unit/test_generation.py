"""Generations: stable keyed hashes of a spec (SPEC §3) that count secrets without revealing them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mcp_reconcile import generation
from mcp_reconcile.manifest import build_spec
from mcp_reconcile.model import API_VERSION, INSTALL_FIELDS, KIND, RUNTIME_FIELDS, Origin, ServerSpec
from mcp_reconcile.store import StateDir

KEY = b"k" * 32
SECRET = "sk-test-SECRET-12345"


def doc(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "a"},
            "spec": {"source": {"npm": "pkg@1.0.0"}, **spec}}


def build(document: dict[str, Any], *, environ: dict[str, str] | None = None, key: bytes = KEY) -> ServerSpec:
    return build_spec(document, origin=Origin("/srv/manifests/a.yaml"), environ=environ or {}, key=key)


def test_the_generation_does_not_depend_on_dict_order() -> None:
    one = build(doc(env={"A": "1", "B": "2"}, args=["x"], health={"intervalSeconds": 5, "timeoutSeconds": 1}))
    reordered = {"spec": {"health": {"timeoutSeconds": 1, "intervalSeconds": 5}, "args": ["x"],
                          "env": {"B": "2", "A": "1"}, "source": {"npm": "pkg@1.0.0"}},
                 "metadata": {"name": "a"}, "kind": KIND, "apiVersion": API_VERSION}
    two = build(reordered)
    assert one.generation == two.generation
    assert one.runtime_generation == two.runtime_generation
    assert dict(one.digests) == dict(two.digests)


def test_the_generation_is_stable_across_loads() -> None:
    assert build(doc(args=["x"])).generation == build(doc(args=["x"])).generation


def test_a_changed_secret_changes_the_generation_but_not_the_install_generation() -> None:
    document = doc(env={"API_KEY": "${API_KEY}"})
    old = build(document, environ={"API_KEY": "sk-test-OLD"})
    new = build(document, environ={"API_KEY": SECRET})
    assert old.generation != new.generation
    assert old.runtime_generation != new.runtime_generation
    assert old.install_generation == new.install_generation
    assert generation.changed_fields(old.digests, new.digests, RUNTIME_FIELDS) == ["env.API_KEY"]


def test_a_printed_generation_does_not_contain_the_secret() -> None:
    spec = build(doc(env={"API_KEY": "${API_KEY}"}), environ={"API_KEY": SECRET})
    printed = " ".join([spec.generation, spec.runtime_generation, spec.install_generation, *spec.digests.values()])
    assert SECRET not in printed
    assert all(c in "0123456789abcdef " for c in printed)


def test_digests_differ_across_state_dir_keys(tmp_path: Path) -> None:
    """The key is random per state dir, so a digest cannot be brute-forced back to a short secret."""
    key_one, key_two = StateDir(tmp_path / "one").hmac_key(), StateDir(tmp_path / "two").hmac_key()
    document = doc(env={"API_KEY": "${API_KEY}"})
    one = build(document, environ={"API_KEY": "ab"}, key=key_one)
    two = build(document, environ={"API_KEY": "ab"}, key=key_two)
    assert one.digests["env.API_KEY"] != two.digests["env.API_KEY"]
    assert one.generation != two.generation


def test_a_field_that_does_not_touch_the_process_leaves_the_runtime_generation_alone() -> None:
    before = build(doc(health={"intervalSeconds": 30}))
    after = build(doc(health={"intervalSeconds": 5}))
    assert before.generation != after.generation
    assert before.runtime_generation == after.runtime_generation


def test_field_digests_split_env_per_key() -> None:
    digests = generation.field_digests({"args": ["x"], "env": {"A": "1", "B": "2"}}, KEY)
    assert sorted(digests) == ["args", "env.A", "env.B"]
    assert len(digests["env.A"]) == generation.DIGEST_HEX


def test_combine_picks_fields_and_env_prefixes() -> None:
    digests = {"source": "s1", "env.A": "e1", "environ": "x", "args": "a1"}
    only_env = generation.combine(digests, ["env"])
    assert only_env == generation.combine({"env.A": "e1"})
    assert generation.combine(digests, INSTALL_FIELDS) == generation.combine({"source": "s1"})
    assert generation.combine(digests) != only_env


def test_changed_fields_names_added_removed_and_changed_keys_within_the_names() -> None:
    old = {"env.A": "1", "env.B": "2", "args": "x", "health": "h1"}
    new = {"env.A": "1", "env.C": "3", "args": "y", "health": "h2"}
    assert generation.changed_fields(old, new, RUNTIME_FIELDS) == ["args", "env.B", "env.C"]
