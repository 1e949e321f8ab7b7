"""dependsOn as a graph: missing references, cycles and start waves. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class DependencyCycle(ValueError):
    """A dependsOn cycle; `cycle` lists the names with the first repeated at the end."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__("dependsOn cycle: " + " -> ".join(cycle))


def find_cycle(edges: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle in `edges` (name -> names it depends on), or None. Unknown targets are ignored."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(edges, WHITE)
    for root in sorted(edges):
        if color[root] != WHITE:
            continue
        stack: list[tuple[str, list[str]]] = [(root, sorted(d for d in edges[root] if d in edges))]
        path = [root]
        color[root] = GREY
        while stack:
            node, todo = stack[-1]
            if not todo:
                color[node] = BLACK
                stack.pop()
                path.pop()
                continue
            nxt = todo.pop(0)
            if color[nxt] == GREY:
                return [*path[path.index(nxt):], nxt]
            if color[nxt] == WHITE:
                color[nxt] = GREY
                path.append(nxt)
                stack.append((nxt, sorted(d for d in edges[nxt] if d in edges)))
    return None


def find_cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Every cycle in `edges` that shares no name with an earlier one, in the order `find_cycle` meets
    them: each cycle's names are set aside before looking again, until the rest is acyclic."""
    rest = dict(edges)
    found: list[list[str]] = []
    while (cycle := find_cycle(rest)) is not None:
        found.append(cycle)
        for name in cycle:
            rest.pop(name, None)
    return found


def waves(edges: Mapping[str, Iterable[str]]) -> dict[str, int]:
    """Dependency depth of every name: 0 depends on nothing known, n+1 after all its dependencies.

    Raises DependencyCycle. References to names not in `edges` are ignored (they are validated elsewhere).
    """
    cycle = find_cycle(edges)
    if cycle:
        raise DependencyCycle(cycle)
    depth: dict[str, int] = {}

    def visit(name: str) -> int:
        if name not in depth:
            deps = [d for d in edges[name] if d in edges]
            depth[name] = 1 + max((visit(d) for d in deps), default=-1)
        return depth[name]

    for name in edges:
        visit(name)
    return depth
