"""How a reload's desired state replaces the one the loop supervises: last good state and the removal grace.

Pure (time is passed in). SPEC §5: a file with any problem is ignored as a whole, and every server it named in
the last good load keeps its last good spec and stays supervised; it is never stopped or removed for a parse or
schema error. A server whose manifest vanished is removed only when it is still gone `grace_s` later, so an
editor or a slow writer rewriting the file never stops and uninstalls it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mcp_reconcile.desired import Desired, has_errors
from mcp_reconcile.model import ServerSpec


@dataclass(frozen=True)
class Merged:
    """The desired state the loop supervises after a reload."""

    desired: dict[str, ServerSpec]         # the specs supervised now: the new ones, plus those kept
    changed: set[str]                      # new, changed (generation or desiredState) or removed names
    held: dict[str, str]                   # known servers without any spec to supervise -> why
    last_good: dict[str, str]              # servers supervised on their last good spec -> why (broken file)
    missing_since: dict[str, float]        # vanished servers -> when (clock) they were first seen gone
    removal_due: dict[str, float] = field(default_factory=dict)   # ... -> when their grace ends
    removed: dict[str, ServerSpec] = field(default_factory=dict)  # specs no longer desired


def merge(previous: Mapping[str, ServerSpec], loaded: Desired, *, missing_since: Mapping[str, float], now: float,
          grace_s: float) -> Merged:
    """Merge a reload (`loaded`) into the previously supervised specs."""
    new = loaded.load.by_name
    since = {n: t for n, t in missing_since.items() if n not in new}
    protected = loaded.held | {n: has_errors(s.origin.file) for n, s in previous.items()
                               if n not in new and loaded.ignores(s.origin.file)}
    vanished = {n for n in previous if n not in new and n not in protected}
    for n in vanished:
        since.setdefault(n, now)
    waiting = {n for n in vanished if now < since[n] + grace_s}
    keep = {n: s for n, s in previous.items() if n not in new and (n in protected or n in waiting)}
    merged = {**keep, **new}
    changed = {n for n in set(merged) | set(previous)
               if n not in merged or n not in previous or merged[n].generation != previous[n].generation
               or merged[n].desired_state != previous[n].desired_state}
    return Merged(desired=merged, changed=changed,
                  held={n: why for n, why in loaded.held.items() if n not in keep},
                  last_good={n: why for n, why in protected.items() if n in keep},
                  missing_since=since, removal_due={n: since[n] + grace_s for n in waiting},
                  removed={n: s for n, s in previous.items() if n not in merged})
