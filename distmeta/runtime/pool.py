"""`WorkerPool`: the adaptation workers of a run, kept alive while their shards run.

The learner hands the pool a list of calls (one per shard); the pool runs each on a ready
worker and returns the results in call order, whoever computed them. Faults cost a re-run
of the shard, not the iteration:

- a worker that dies (its process killed, its node removed) loses its call: the call goes
  back into the queue for the next free worker, and a replacement actor is started in the
  dead one's slot. Ray places the replacement wherever the resources are: on a surviving
  node, or on a node that joins later (until then the run goes on with fewer workers);
- a call running past the timeout is a straggler: its worker is killed and replaced the
  same way, so no late result can arrive;
- each call's result is stored once, in its own slot, and the results are added in the
  one order of `reduce.py`: a shard is never counted twice or partially, and the sum is
  the same bits as a fault-free run's.

Calls whose arguments are plain values (parameters small enough to travel inline, see
`share`) go over each worker's direct channel (`channel.py`); calls that carry an object
of Ray's store (large parameters, shared once with every worker) are Ray actor calls, and
`map_sum` adds their gradients on the cluster. Faults end the same way on both.

An exception raised by the shard's code itself (a bug, bad data) is not a fault: it ends
the run, as in-process. So does a call lost on `max_attempts` workers (a shard that kills
every worker it runs on) and a worker whose constructor fails.
"""

from __future__ import annotations

import logging
import secrets
import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait as wait_channels
from typing import Any, cast

import numpy as np
import ray
from ray.actor import ActorClass

from distmeta.runtime import reduce
from distmeta.runtime.channel import Channel
from distmeta.runtime.worker import WORKER_LOST, Call, Worker, WorkerLostError, WorkerStartLost, first_line

logger = logging.getLogger(__name__)

# Without `shard_timeout_s`: a call is a straggler after this many times the median duration
# of its method's recent calls, and never sooner than AUTO_TIMEOUT_FLOOR_S (start-up, a
# slow first batch and scheduling noise must not look like a hang).
AUTO_TIMEOUT_FACTOR = 10.0
AUTO_TIMEOUT_FLOOR_S = 60.0
# Ray's own limit for passing an argument by value rather than through the object store.
INLINE_PARAMS_BYTES = 100 * 1024
# From this size of parameters (and gradients) on, more than one group of shards is added
# on the cluster: no gain measured at 0.4 MB, up to 1.4x at 40 MB (BENCHMARKS.md).
CLUSTER_ADD_BYTES = 4 * 1024 * 1024
# How often a pool with queued work but no ready worker says what it waits for.
WAITING_NOTICE_S = 30.0
# The longest the pool waits for results before looking at stragglers and starting
# workers again: a dead worker is seen within this, and a fast iteration costs one wait.
POLL_S = 0.05
# While both kinds of call are in flight, the channels are waited on for this long at a
# time before Ray's calls are looked at.
MIXED_POLL_S = 0.002


class WorkerPool:
    """`size` Ray actors of `actor_class(*init_args)`, each with `num_cpus` / `num_gpus`.

    `timeout_s` (None: automatic, see AUTO_TIMEOUT_*) makes a call a straggler;
    `max_attempts` bounds how many workers one call may lose; `on_event(dict)` hears of
    every worker started, lost (dead or timed out) and replaced (the learner logs them)."""

    def __init__(self, actor_class: type, init_args: tuple, size: int, num_cpus: float,
                 num_gpus: float, timeout_s: float | None, max_attempts: int,
                 on_event: Callable[[dict], None] | None = None):
        self._remote: ActorClass[Any] = ray.remote(actor_class).options(num_cpus=num_cpus, num_gpus=num_gpus)
        self._resources = {"CPU": num_cpus, "GPU": num_gpus}
        # Where large models' gradients are added: None, on the cluster when there is more
        # than one group of shards and the parameters are CLUSTER_ADD_BYTES or more (no
        # gain measured below either); True, on the cluster always; False, by the learner.
        # The same bits; benchmarks/learner_scale.py compares them.
        self.add_on_cluster: bool | None = None
        self._shared_bytes = 0
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self._on_event = on_event
        self.durations: dict[str, deque] = {}  # seconds of recent successful calls, by kind
        self._slots = [Worker(i, self._remote, init_args, secrets.token_bytes(32)) for i in range(size)]

    # -- public -----------------------------------------------------------------------

    def map(self, method: str, calls: Sequence[tuple], context: str = "", kind: str | None = None
            ) -> tuple[list, int]:
        """Results of `worker.method(*args)` for each args tuple of `calls`, in call order,
        and how many calls were re-run after losing their worker.
        Call i goes first to worker i mod size (the worker that ran it last time keeps its
        caches warm); a free worker takes any queued call whose own worker is busy or gone.
        `context` (e.g. "iteration 12") names the calls in events and errors; `kind`
        (default `method`) groups calls of alike durations for the straggler timeout."""
        results, reissued = self.run(method, calls, range(len(calls)), context, keep_gradients=False, kind=kind)
        return [results[i] for i in range(len(calls))], reissued

    def map_sum(self, method: str, calls: Sequence[tuple], context: str = "", kind: str | None = None
                ) -> tuple[tuple, int]:
        """`reduce.add_results` of `map`'s results (`(gradient, tasks, metric sums)` per
        call), and how many calls were re-run. With parameters in Ray's store (large
        models) and more than one group of calls (`reduce.GROUP`), the gradients are added
        on the cluster (`cluster_add.py`, see `add_on_cluster`); the same bits either way."""
        on_cluster = self.add_on_cluster
        if on_cluster is None:
            on_cluster = len(calls) > reduce.GROUP and self._shared_bytes >= CLUSTER_ADD_BYTES
        if on_cluster and len(calls) > 1 and any(isinstance(a, ray.ObjectRef) for a in calls[0]):
            from distmeta.runtime.cluster_add import add_on_cluster

            return add_on_cluster(self, method, calls, context, kind)
        results, reissued = self.map(method, calls, context, kind)
        return reduce.add_results(results), reissued

    def ready_slots(self) -> list[Worker]:
        """The slots whose workers are ready, in slot order."""
        return [s for s in self._slots if s.ready]

    def run(self, method: str, calls: Sequence[tuple], indices, context: str, keep_gradients: bool,
            where: dict[int, str] | None = None, kind: str | None = None) -> tuple[dict[int, Any], int]:
        """The results of calls `indices`, by index; with `keep_gradients` a Ray call's
        gradient (its result's first item) stays in Ray's store and its reference is
        returned in its place. `where` receives the node of each call's worker."""
        kind = kind or method
        reissued = 0
        results: dict[int, Any] = {}
        queue = list(indices)
        attempts = [0] * len(calls)
        running: dict[object, Call] = {}  # by its Ray reference or its slot's channel
        waiting_since = None
        try:
            while queue or running:
                self._dispatch(method, calls, queue, running, keep_gradients)
                if queue and not running and not any(s.ready for s in self._slots):
                    waiting_since = self._notice_waiting(waiting_since, len(queue))
                else:
                    waiting_since = None
                starting = {s.ready_ref: s for s in self._slots if s.ready_ref is not None}
                channels = [key for key in running if isinstance(key, Channel)]
                refs = [key for key in running if not isinstance(key, Channel)]
                if channels:
                    by_fd = {ch.fileno(): ch for ch in channels}
                    readable = wait_channels(list(by_fd), MIXED_POLL_S if refs else POLL_S)
                    answered = [by_fd[cast(int, fd)] for fd in readable]
                    done = ray.wait(refs + list(starting), num_returns=len(refs) + len(starting),
                                    timeout=0)[0] if refs or starting else []
                else:
                    answered = []
                    # Nothing queued: all running calls at once (one wait per fast
                    # iteration); calls queued: the first worker to free up takes the next.
                    wanted = 1 if queue or not running else len(running)
                    done, _ = ray.wait(refs + list(starting), num_returns=wanted, timeout=POLL_S)
                for ref in done:
                    if ref in starting:
                        self._finish_start(starting[ref])
                returned = [ref for ref in done if ref in running]
                fetched = iter(_fetch([ref for key in returned for ref in running[key].fetch]))
                finished = []
                for key in returned:
                    call = running[key]
                    parts = [next(fetched) for _ in call.fetch]
                    lost = next((lost for _, lost in parts if lost is not None), None)
                    values = [value for value, _ in parts]
                    finished.append((key, (values[0] if call.stored is None else (call.stored, *values), lost)))
                for ch in answered:
                    reply = ch.receive(running[ch].seq)
                    if reply is not None:
                        finished.append((ch, reply))
                for key, (value, lost) in finished:
                    call = running.pop(key)
                    call.slot.busy = False
                    if lost is not None:
                        self._lose(call, f"lost ({first_line(lost)})", method, context, queue, attempts)
                        reissued += 1
                        continue
                    results[call.index] = value
                    if where is not None:
                        where[call.index] = call.slot.node
                    self.durations.setdefault(kind, deque(maxlen=100)).append(time.monotonic() - call.started)
                limit = self.straggler_limit(kind)
                now = time.monotonic()
                for key, call in list(running.items()):
                    if now - call.started > limit:
                        del running[key]
                        call.slot.busy = False
                        self._lose(call, f"past runtime.shard_timeout_s ({limit:g} s)", method, context, queue,
                                   attempts)
                        reissued += 1
        except BaseException:
            # A shard's own error, a lost shard or Ctrl-C: the slots of the calls still
            # running must take calls again if the learner goes on (their stale
            # results are never read: a channel's reply names its call).
            for call in running.values():
                call.slot.busy = False
            raise
        return results, reissued

    def share(self, flat: np.ndarray):
        """Flat parameters as the calls take them, made once for all of them: the array
        itself when small (measured ~2.4 ms a step cheaper on the sinusoid MLP), else one
        object in Ray's store that every worker reads."""
        self._shared_bytes = flat.nbytes
        return flat if flat.nbytes <= INLINE_PARAMS_BYTES else ray.put(flat)

    @property
    def alive(self) -> int:
        """Workers ready to take a call now."""
        return sum(s.ready for s in self._slots)

    def whereabouts(self) -> list[tuple[str, int]]:
        """(node id, process id) of each ready worker, in slot order."""
        return [(s.node, s.pid) for s in self._slots if s.ready]

    def close(self) -> None:
        for slot in self._slots:
            slot.stop()

    # -- internals --------------------------------------------------------------------

    def _dispatch(self, method: str, calls: Sequence[tuple], queue: list[int],
                  running: dict[object, Call], keep_gradients: bool) -> None:
        size = len(self._slots)
        for slot in self._slots:
            if not queue or not slot.ready or slot.busy:
                continue
            own = [i for i in queue if i % size == slot.index]
            orphans = [i for i in queue if not self._slots[i % size].ready]
            index = (own or orphans or queue)[0]
            queue.remove(index)
            last = not any(i % size == slot.index for i in queue)
            key, call = slot.send(index, method, calls[index], keep_gradients, idle_after=last)
            running[key] = call

    def _lose(self, call: Call, why: str, method: str, context: str, queue: list[int],
              attempts: list[int]) -> None:
        """Requeue a call whose worker is gone (or hung: kill it) and restart the slot."""
        slot = call.slot
        attempts[call.index] += 1
        what = f"shard {call.index}" + (f" of {context}" if context else "")
        if attempts[call.index] >= self.max_attempts:
            self.event("worker_lost", slot, f"{why} while running {what} ({method})")
            raise WorkerLostError(
                f"{what}: lost its worker {attempts[call.index]} times (last: {why}); "
                f"raise runtime.max_shard_attempts (now {self.max_attempts}) if workers die this often"
            )
        self.replace(slot, f"{why} while running {what} ({method})")
        queue.insert(0, call.index)

    def replace(self, slot: Worker, why: str) -> None:
        """Kill a worker (if it still lives) and start another in its place."""
        self.event("worker_lost", slot, why)
        slot.stop()
        slot.start()

    def _finish_start(self, slot: Worker) -> None:
        try:
            kind, detail = slot.finish_start()
        except WorkerStartLost as lost:
            self.event("worker_lost", slot, f"lost while starting ({lost})")
            if slot.start_losses >= self.max_attempts:
                raise WorkerLostError(f"worker: lost while starting {slot.start_losses} times in a row (last: "
                                      f"{lost}); see the workers' logs above") from None
            slot.start()
            return
        self.event(kind, slot, detail)

    def straggler_limit(self, kind: str) -> float:
        """Seconds after which a call of `kind` (see `map`) counts as a straggler now."""
        if self.timeout_s is not None:
            return self.timeout_s
        recent = self.durations.get(kind)
        if not recent:
            return float("inf")  # the first calls include start-up: nothing to compare with
        return max(AUTO_TIMEOUT_FLOOR_S, AUTO_TIMEOUT_FACTOR * statistics.median(recent))

    def _notice_waiting(self, since: float | None, queued: int) -> float:
        now = time.monotonic()
        if since is None:
            return now
        if now - since >= WAITING_NOTICE_S:
            wanted = ", ".join(f"{k} {v:g}" for k, v in self._resources.items() if v)
            logger.warning("%d shard(s) wait for a worker: none of %d is ready; Ray places each on a "
                           "node with %s free", queued, len(self._slots), wanted)
            return now
        return since

    def event(self, kind: str, slot: Worker | None, detail: str) -> None:
        """Tell `on_event` of a worker's (or, without a slot, a shard's) fate."""
        event = {"event": kind, "worker": slot and slot.index, "node": slot.node if slot else "",
                 "pid": slot.pid if slot else 0, "detail": detail, "time": time.time()}
        if self._on_event is not None:
            self._on_event(event)


def _fetch(refs: list) -> list[tuple[object, BaseException | None]]:
    """(value, None) or (None, the worker's loss) per ref; one `ray.get` when none is lost.
    An exception raised by the call's own code propagates."""
    if not refs:  # only channel calls answered: no Ray round trip
        return []
    try:
        return [(value, None) for value in ray.get(refs)]
    except WORKER_LOST:
        pass
    fetched: list[tuple[object, BaseException | None]] = []
    for ref in refs:
        try:
            fetched.append((ray.get(ref), None))
        except WORKER_LOST as exc:
            fetched.append((None, exc))
    return fetched
