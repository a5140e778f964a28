"""The causal DAG over the parent variables of a deep SCM (METHOD.md section 1).

The graph says which parent causes which; the action step of a counterfactual recomputes
the descendants of an intervened variable and keeps everything else (METHOD.md section 2),
so ``descendants`` and a deterministic topological ``order`` are what the SCM needs.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from typing import Any

from segcft.utils import InputError

#: The variable kinds that have a parent mechanism: a conditional flow or a Bernoulli.
MECHANISM_KINDS = ("continuous", "binary")


@dataclass(frozen=True)
class CausalGraph:
    """A validated DAG ``{child: (parents, ...)}`` over every variable, with each variable's kind.

    Roots are listed with ``()``. ``CausalGraph(**graph.to_dict())`` rebuilds the graph, so it
    can be stored as JSON beside a checkpoint.
    """

    parents: dict[str, tuple[str, ...]]
    kinds: dict[str, str]
    #: Topological order, ties broken by name: the same graph always gives the same order.
    order: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parents = {str(name): tuple(str(p) for p in pas) for name, pas in self.parents.items()}
        kinds = {str(name): str(kind) for name, kind in self.kinds.items()}
        for name, pas in parents.items():
            if len(set(pas)) != len(pas):
                raise InputError(f"variable {name!r} lists a parent twice: {list(pas)}")
            for parent in pas:
                if parent not in parents:
                    raise InputError(
                        f"variable {name!r} has parent {parent!r}, which is not a variable of the graph; "
                        f"variables: {sorted(parents)}"
                    )
        for name in parents:
            if name not in kinds:
                raise InputError(f"variable {name!r} has no kind; expected one of {MECHANISM_KINDS}")
            if kinds[name] not in MECHANISM_KINDS:
                raise InputError(f"variable {name!r} has kind {kinds[name]!r}; supported kinds: {MECHANISM_KINDS}")
        extra = sorted(set(kinds) - set(parents))
        if extra:
            raise InputError(f"kinds are given for variables {extra} that are not in the graph {sorted(parents)}")
        object.__setattr__(self, "parents", parents)
        object.__setattr__(self, "kinds", {name: kinds[name] for name in parents})
        object.__setattr__(self, "order", _topological_order(parents))

    def children(self, name: str) -> set[str]:
        """The variables that have ``name`` as a direct parent."""
        self._check(name)
        return {child for child, pas in self.parents.items() if name in pas}

    def descendants(self, name: str) -> set[str]:
        """Every variable reachable from ``name`` along the edges (``name`` itself excluded)."""
        return self._reach(name, self.children)

    def ancestors(self, name: str) -> set[str]:
        """Every variable from which ``name`` is reachable (``name`` itself excluded)."""
        return self._reach(name, lambda v: set(self.parents[v]))

    def _reach(self, name: str, step: Callable[[str], set[str]]) -> set[str]:
        self._check(name)
        out: set[str] = set()
        frontier = step(name)
        while frontier:
            out |= frontier
            frontier = set().union(*(step(v) for v in frontier)) - out
        return out

    def _check(self, name: str) -> None:
        if name not in self.parents:
            raise InputError(f"unknown variable {name!r}; the graph has {sorted(self.parents)}")

    @classmethod
    def from_config(cls, graph: Mapping[str, Sequence[str]], variables: Mapping[str, Mapping[str, Any]]) -> CausalGraph:
        """The graph of a datalist: ``graph`` is ``{child: [parents]}``, ``variables`` its variable descriptions.

        Variables that appear only as parents become roots; variables not named in ``graph``
        (e.g. the pixel twins of the areas) are left out.
        """
        parents: dict[str, tuple[str, ...]] = {}
        for child, pas in graph.items():
            if isinstance(pas, str) or not isinstance(pas, Sequence):
                raise InputError(f"graph entry {child!r} must be a list of parent names, got {pas!r}")
            parents[child] = tuple(pas)
            for parent in pas:
                parents.setdefault(parent, ())
        kinds = {}
        for name in parents:
            if name not in variables:
                raise InputError(f"graph names variable {name!r}, which has no description; known: {sorted(variables)}")
            kinds[name] = variables[name].get("kind")
        return cls(parents, kinds)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """JSON-serialisable ``{"parents": {child: [parents]}, "kinds": {name: kind}}``."""
        return {"parents": {k: list(v) for k, v in self.parents.items()}, "kinds": dict(self.kinds)}


def _topological_order(parents: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """Kahn's algorithm with a heap: of the variables whose parents are done, the smallest name first."""
    sorter = TopologicalSorter(parents)
    try:
        sorter.prepare()
    except CycleError as e:
        cycle = " -> ".join(e.args[1])  # each node is a parent of the next
        raise InputError(f"the causal graph has a cycle: {cycle}") from e
    ready = list(sorter.get_ready())
    heapq.heapify(ready)
    order = []
    while ready:
        name = heapq.heappop(ready)
        order.append(name)
        sorter.done(name)
        for new in sorter.get_ready():
            heapq.heappush(ready, new)
    return tuple(order)
