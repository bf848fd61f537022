"""How the shards' results of one meta-iteration are added: one order, wherever it runs.

Shard gradients are added in groups of `GROUP` consecutive shards (each group in shard
order), then the groups' sums in group order. The grouping lets a Ray cluster add each
group where its gradients are, so that the learner brings in one gradient per group, not
one per shard (`WorkerPool.map_sum`); in-process and over the direct channels the learner
adds in the same order, so the bits depend on the number of shards only, never on where
they ran or on which path their gradients took."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Shards per group: the learner receives ceil(shards / GROUP) gradients a step from a
# cluster (see BENCHMARKS.md, "The central learner at scale").
GROUP = 8


def group_bounds(n: int) -> list[tuple[int, int]]:
    """[lo, hi) of each group of `n` shards."""
    return [(lo, min(lo + GROUP, n)) for lo in range(0, n, GROUP)]


def add_in_order(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """a0 + a1 + ... left to right, in a new array."""
    total = np.array(arrays[0], copy=True)
    for a in arrays[1:]:
        total += a
    return total


def add_results(results: Sequence[tuple[np.ndarray, int, dict]]) -> tuple[np.ndarray, int, dict]:
    """The shards' `(gradient sum, tasks, metric sums)` added: gradients by group, as a
    cluster adds them; tasks and metric sums in shard order."""
    partials = [add_in_order([r[0] for r in results[lo:hi]]) for lo, hi in group_bounds(len(results))]
    return add_counts(add_in_order(partials), results)


def add_counts(grad: np.ndarray, results: Sequence[tuple]) -> tuple[np.ndarray, int, dict]:
    """`grad` with the shards' tasks and metric sums (the results' 2nd and 3rd items) added."""
    return grad, sum(r[1] for r in results), {k: sum(r[2][k] for r in results) for k in results[0][2]}
