"""Adding a large model's shard gradients on the cluster, so that the learner brings in one
gradient per group of shards instead of one per shard.

The shards run as usual, but each call's gradient stays in Ray's store (the learner reads
only the task count and the metrics). Each group of `reduce.GROUP` consecutive shards is
then added by one of the pool's own workers on the node that computed most of the group
(its other gradients come to it; on an 8-GPU node all may be local), in shard order; the
learner adds the groups' sums in group order: `reduce.add_results`'s order, whatever ran
where. The pool's workers do the adding, not Ray tasks: a task needs a worker process of
its own, which a node whose CPUs the workers hold starts afresh for every call (measured:
4.3 s an iteration with 32 workers on 4 nodes; see BENCHMARKS.md).

Faults: a node lost before its gradients were added costs a re-run of the shards it
computed; a worker lost while adding a group is replaced and the group added again
elsewhere (its inputs are in its node's store, not in the worker)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import ray
from ray.exceptions import ObjectLostError, RayActorError, RayError

from distmeta.errors import RunError
from distmeta.runtime import reduce
from distmeta.runtime.worker import Worker, WorkerLostError, first_line

if TYPE_CHECKING:
    from distmeta.runtime.pool import WorkerPool

# How long a lost gradient's node may take to be seen dead.
LOST_NODE_WAIT_S = 60.0


def _add_on_worker(_runner, *grads: np.ndarray) -> np.ndarray:
    """On a worker: one group's gradients, added in shard order."""
    return reduce.add_in_order(grads)


def add_on_cluster(pool: WorkerPool, method: str, calls: Sequence[tuple], context: str,
                   kind: str | None = None) -> tuple[tuple, int]:
    """`reduce.add_results` of the calls' results, the gradients added on the cluster; and
    how many calls were re-run."""
    where: dict[int, str] = {}  # the node that computed each shard's gradient
    leaves, reissued = pool.run(method, calls, range(len(calls)), context, keep_gradients=True, where=where,
                                kind=kind)
    attempts = 2 * pool.max_attempts  # a lost node may fail one attempt per worker on it, then its gradients
    for _ in range(attempts):
        partials, input_lost = [], False
        for todo, slot in _start_groups(pool, [leaves[i][0] for i in range(len(calls))], where):
            try:
                got = ray.get(todo)
                partials.append(reduce.add_in_order(got) if isinstance(todo, list) else got)
            except RayError as exc:
                if isinstance(exc, ObjectLostError) or isinstance(getattr(exc, "cause", None), ObjectLostError):
                    input_lost = True
                elif isinstance(exc, RayActorError) and slot is not None:
                    pool.replace(slot, f"lost ({first_line(exc)}) while adding gradients of {context}")
                else:
                    raise
        if len(partials) == len(reduce.group_bounds(len(calls))):
            results = [leaves[i] for i in range(len(calls))]
            return reduce.add_counts(reduce.add_in_order(partials), results), reissued
        if input_lost:
            lost = _lost_with_their_nodes(where)
            for i in lost:
                pool.event("gradient_lost", None, f"shard {i} of {context}: the node holding its gradient is gone; "
                                                  "re-run")
            again, more = pool.run(method, calls, lost, context, keep_gradients=True, where=where, kind=kind)
            leaves.update(again)
            reissued += len(lost) + more
    raise WorkerLostError(f"{context}: its gradients could not be added in {attempts} attempts; "
                          "raise runtime.max_shard_attempts if workers and nodes are lost this often")


def _start_groups(pool: WorkerPool, grads: list, where: dict[int, str]) -> list[tuple]:
    """Per group, what to `ray.get` and the worker adding it: a reference to its sum; a lone
    shard's gradient (no worker); or, with no worker ready, the group's gradients for the
    learner to add. A group goes to a ready worker on the node that computed most of it,
    else to any ready worker."""
    ready = pool.ready_slots()
    started: list[tuple[Any, Worker | None]] = []
    for g, (lo, hi) in enumerate(reduce.group_bounds(len(grads))):
        if hi - lo == 1:
            started.append((grads[lo], None))
            continue
        nodes = [where[i] for i in range(lo, hi)]
        home = max(nodes, key=nodes.count)
        candidates = [s for s in ready if s.node == home] or ready
        if not candidates:
            started.append((grads[lo:hi], None))
            continue
        slot = candidates[g % len(candidates)]
        started.append((slot.actor.__ray_call__.remote(_add_on_worker, *grads[lo:hi]), slot))
    return started


def _lost_with_their_nodes(where: dict[int, str]) -> list[int]:
    """The shards whose gradients were on nodes now gone (Ray may take a moment to call a
    lost node dead)."""
    deadline = time.monotonic() + LOST_NODE_WAIT_S
    while True:
        alive = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
        lost = sorted(i for i, node in where.items() if node not in alive)
        if lost:
            return lost
        if time.monotonic() > deadline:
            raise RunError("a shard's gradient was lost although every node that computed one is alive; "
                           "continue with --resume")
        time.sleep(0.05)
