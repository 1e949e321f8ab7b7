"""Spec generations: stable keyed hashes of a spec's fields (SPEC §3).

Each field gets its own digest (env one per key, as `env.NAME`) so a plan can name what changed without
showing a value. Secret values count, but only through an HMAC keyed by the state dir's random key, so a
printed generation cannot be brute-forced back to a short secret. Dict order never matters.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from typing import Any

DIGEST_HEX = 16


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def field_digests(fields: Mapping[str, Any], key: bytes) -> dict[str, str]:
    """One digest per field; `env` is split into `env.NAME` entries."""
    out: dict[str, str] = {}
    for name, value in fields.items():
        if name == "env":
            for env_name, env_value in (value or {}).items():
                out[f"env.{env_name}"] = _mac(key, f"env.{env_name}", env_value)
        else:
            out[name] = _mac(key, name, value)
    return out


def combine(digests: Mapping[str, str], names: Iterable[str] | None = None) -> str:
    """A generation over the digests of `names` (every field when None); fields may be prefixes (`env`)."""
    wanted = tuple(names) if names is not None else None
    picked = {k: v for k, v in digests.items()
              if wanted is None or any(k == n or k.startswith(n + ".") for n in wanted)}
    return hashlib.sha256(_canonical(picked)).hexdigest()[:12]


def changed_fields(old: Mapping[str, str], new: Mapping[str, str], names: Iterable[str]) -> list[str]:
    """Field names (env per key) whose digest differs between two digest maps, limited to `names`."""
    wanted = tuple(names)
    keys = {k for k in (*old, *new) if any(k == n or k.startswith(n + ".") for n in wanted)}
    return sorted(k for k in keys if old.get(k) != new.get(k))


def _mac(key: bytes, name: str, value: Any) -> str:
    return hmac.new(key, name.encode() + b"\0" + _canonical(value), hashlib.sha256).hexdigest()[:DIGEST_HEX]
