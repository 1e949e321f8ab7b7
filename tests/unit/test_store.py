"""The state directory: atomic writes, file modes, the controller lock, corrupt state, the HMAC key."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_reconcile.errors import StoreError
from mcp_reconcile.ledger import Ledger
from mcp_reconcile.store import StateDir, read_json, write_json_atomic

# Bound on the helper interpreter that tries the lock; it does no more than import and flock.
SUBPROCESS_TIMEOUT_S = 60.0

# Run in another process: try the lock and print the outcome.
TRY_LOCK = """
import sys
from mcp_reconcile.errors import StoreError
from mcp_reconcile.store import StateDir
try:
    StateDir(sys.argv[1]).acquire_lock()
except StoreError as exc:
    print(exc)
    sys.exit(3)
print("acquired")
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def try_lock_elsewhere(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", TRY_LOCK, str(root)], capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT_S, check=False)


def test_an_atomic_write_leaves_only_the_file_with_mode_0600(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "state.json"
    write_json_atomic(target, {"version": 1, "servers": {}})
    write_json_atomic(target, {"version": 1, "servers": {"a": {}}})
    assert os.listdir(target.parent) == ["state.json"]
    assert mode(target) == 0o600
    assert mode(target.parent) == 0o700
    assert json.loads(target.read_text()) == {"version": 1, "servers": {"a": {}}}


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_json_atomic(target, {"old": True})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"new": object()})
    assert os.listdir(tmp_path) == ["state.json"]
    assert json.loads(target.read_text()) == {"old": True}


def test_records_round_trip_and_name_the_known_servers(state_dir: StateDir) -> None:
    state_dir.ensure()
    state_dir.install_dir("a").mkdir()
    state_dir.write_install({"server": "a", "source": "npm:pkg@1.0.0", "generation": "g1"})
    state_dir.write_run({"server": "b", "runner_pid": 1, "generation": "g2"})
    assert state_dir.read_install("a") == {"server": "a", "source": "npm:pkg@1.0.0", "generation": "g1"}
    assert state_dir.read_run("b") == {"server": "b", "runner_pid": 1, "generation": "g2"}
    assert state_dir.read_run("a") is None
    assert state_dir.known_servers() == {"a", "b"}
    assert mode(state_dir.run_record_path("b")) == 0o600
    state_dir.remove_run("b")
    state_dir.remove_run("b")  # idempotent
    assert state_dir.known_servers() == {"a"}


def test_ensure_creates_private_directories(state_dir: StateDir) -> None:
    state_dir.ensure()
    for sub in ("", "installs", "run", "logs", "reports"):
        assert mode(state_dir.root / sub) == 0o700


def test_a_second_controller_cannot_take_the_lock(state_dir: StateDir) -> None:
    state_dir.acquire_lock()
    try:
        refused = try_lock_elsewhere(state_dir.root)
    finally:
        state_dir.release_lock()
    assert refused.returncode == 3, refused.stderr
    assert refused.stdout.strip() == (
        f"{state_dir.root}: another mcp-reconcile controller (pid {os.getpid()}) holds the lock; "
        "it is acting on this state dir. Stop it first, or use --dry-run to only plan.")
    assert mode(state_dir.root / ".lock") == 0o600


def test_the_lock_is_free_again_once_released(state_dir: StateDir) -> None:
    with state_dir.locked():
        pass
    acquired = try_lock_elsewhere(state_dir.root)
    assert (acquired.returncode, acquired.stdout.strip()) == (0, "acquired"), acquired.stderr


def test_a_second_state_dir_object_in_this_process_is_refused_too(state_dir: StateDir) -> None:
    """flock is per open file: two controllers in one process are kept apart as well."""
    with state_dir.locked(), pytest.raises(StoreError, match="holds the lock"):
        StateDir(state_dir.root).acquire_lock()


def test_a_corrupt_state_file_is_a_store_error_naming_the_file(state_dir: StateDir) -> None:
    state_dir.ensure()
    state_dir.state_file.write_text('{"version": 1, "servers": {')
    with pytest.raises(StoreError) as caught:
        read_json(state_dir.state_file)
    assert str(caught.value).startswith(f"{state_dir.state_file}: unreadable state file: ")
    with pytest.raises(StoreError, match=f"^{re.escape(str(state_dir.state_file))}: "):
        Ledger(state_dir)


def test_a_state_file_that_breaks_its_schema_is_a_store_error_naming_the_file(state_dir: StateDir) -> None:
    state_dir.ensure()
    state_dir.state_file.write_text(json.dumps({"version": 1, "servers": {"a": {"restarts": -1}}}))
    with pytest.raises(StoreError, match=f"^{re.escape(str(state_dir.state_file))}: servers.a.restarts: "):
        Ledger(state_dir)


def test_a_corrupt_record_is_a_store_error_naming_the_file(state_dir: StateDir) -> None:
    path = state_dir.run_record_path("a")
    path.parent.mkdir(parents=True)
    path.write_text("not json")
    with pytest.raises(StoreError, match=f"^{re.escape(str(path))}: unreadable state file"):
        state_dir.read_run("a")


def test_the_hmac_key_is_random_private_and_stable(tmp_path: Path) -> None:
    one, two = StateDir(tmp_path / "one"), StateDir(tmp_path / "two")
    key = one.hmac_key()
    assert len(key) == 32
    assert one.hmac_key() == key
    assert StateDir(tmp_path / "one").hmac_key() == key
    assert two.hmac_key() != key
    assert mode(one.root / ".key") == 0o600


def test_a_truncated_key_file_is_never_used_as_the_key(state_dir: StateDir) -> None:
    state_dir.ensure()
    (state_dir.root / ".key").write_bytes(b"")
    try:
        key = state_dir.hmac_key()
    except StoreError:
        return  # refusing it is as good as replacing it
    assert len(key) == 32
