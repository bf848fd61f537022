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
- each call's result is stored once, in its own slot, and the learner reduces the slots
  in call order: a shard is never counted twice or partially, and the sum is the same
  bits as a fault-free run's.

An exception raised by the shard's code itself (a bug, bad data) is not a fault: it ends
the run, as in-process. So does a call lost on `max_attempts` workers (a shard that kills
every worker it runs on) and a worker whose constructor fails.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from ray.actor import ActorClass
from ray.exceptions import NodeDiedError, ObjectLostError, RayActorError, RayError, WorkerCrashedError

from distmeta.errors import RunError

logger = logging.getLogger(__name__)

# Failures of the worker rather than of the shard's code: the call is re-run elsewhere.
WORKER_LOST = (RayActorError, WorkerCrashedError, NodeDiedError, ObjectLostError)

# Without `shard_timeout_s`: a call is a straggler after this many times the median duration
# of its method's recent calls, and never sooner than AUTO_TIMEOUT_FLOOR_S (start-up, a
# slow first batch and scheduling noise must not look like a hang).
AUTO_TIMEOUT_FACTOR = 10.0
AUTO_TIMEOUT_FLOOR_S = 60.0
# Ray's own limit for passing an argument by value rather than through the object store.
INLINE_PARAMS_BYTES = 100 * 1024
# How often a pool with queued work but no ready worker says what it waits for.
WAITING_NOTICE_S = 30.0
# The longest the pool waits for results before looking at stragglers and starting
# workers again: a dead worker is seen within this, and a fast iteration costs one wait.
POLL_S = 0.05


class WorkerLostError(RunError):
    """A shard lost its worker `max_attempts` times, or a worker could not start."""


def _whereabouts(_runner) -> tuple[str, int]:
    return ray.get_runtime_context().get_node_id(), os.getpid()


@dataclass
class _Slot:
    index: int
    actor: Any = None  # a Ray actor handle
    ready_ref: Any = None  # set while the actor is starting
    node: str = ""
    pid: int = 0
    busy: bool = False
    starts: int = 0
    start_losses: int = 0  # in a row

    @property
    def ready(self) -> bool:
        return self.actor is not None and self.ready_ref is None


@dataclass
class _Call:
    index: int
    slot: _Slot
    started: float


class WorkerPool:
    """`size` Ray actors of `actor_class(*init_args)`, each with `num_cpus` / `num_gpus`.

    `timeout_s` (None: automatic, see AUTO_TIMEOUT_*) makes a call a straggler;
    `max_attempts` bounds how many workers one call may lose; `on_event(dict)` hears of
    every worker started, lost (dead or timed out) and replaced (the learner logs them)."""

    def __init__(self, actor_class: type, init_args: tuple, size: int, num_cpus: float,
                 num_gpus: float, timeout_s: float | None, max_attempts: int,
                 on_event: Callable[[dict], None] | None = None):
        self._remote: ActorClass[Any] = ray.remote(actor_class).options(num_cpus=num_cpus, num_gpus=num_gpus)
        self._init_args = init_args
        self._resources = {"CPU": num_cpus, "GPU": num_gpus}
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self._on_event = on_event
        self.durations: dict[str, deque] = {}  # seconds of recent successful calls, by method
        self._slots = [_Slot(i) for i in range(size)]
        for slot in self._slots:
            self._start(slot)

    # -- public -----------------------------------------------------------------------

    def map(self, method: str, calls: Sequence[tuple], context: str = "") -> tuple[list, int]:
        """Results of `worker.method(*args)` for each args tuple of `calls`, in call order,
        and how many calls were re-run after losing their worker.
        Call i goes first to worker i mod size (the worker that ran it last time keeps its
        caches warm); a free worker takes any queued call whose own worker is busy or gone.
        `context` (e.g. "iteration 12") names the calls in events and errors."""
        reissued = 0
        results: dict[int, object] = {}
        queue = list(range(len(calls)))
        attempts = [0] * len(calls)
        running: dict[object, _Call] = {}
        waiting_since = None
        try:
            while len(results) < len(calls):
                self._dispatch(method, calls, queue, running)
                if queue and not running and not any(s.ready for s in self._slots):
                    waiting_since = self._notice_waiting(waiting_since, len(queue))
                else:
                    waiting_since = None
                starting = {s.ready_ref: s for s in self._slots if s.ready_ref is not None}
                refs = list(running) + list(starting)
                # Nothing queued: all running calls at once (one wait per fast iteration);
                # calls queued: the first worker to free up takes the next.
                wanted = 1 if queue or not running else len(running)
                done, _ = ray.wait(refs, num_returns=wanted, timeout=POLL_S)
                for ref in done:
                    if ref in starting:
                        self._finish_start(starting[ref])
                finished = [ref for ref in done if ref in running]
                for ref, (value, lost) in zip(finished, _fetch(finished)):
                    call = running.pop(ref)
                    call.slot.busy = False
                    if lost is not None:
                        self._lose(call, f"lost ({_first_line(lost)})", method, context, queue, attempts)
                        reissued += 1
                        continue
                    results[call.index] = value
                    self.durations.setdefault(method, deque(maxlen=100)).append(time.monotonic() - call.started)
                limit = self.straggler_limit(method)
                now = time.monotonic()
                for ref, call in list(running.items()):
                    if now - call.started > limit:
                        del running[ref]
                        call.slot.busy = False
                        self._lose(call, f"past runtime.shard_timeout_s ({limit:g} s)", method, context, queue,
                                   attempts)
                        reissued += 1
        except BaseException:
            # A shard's own error, a lost shard or Ctrl-C: the slots of the calls still
            # running must take calls again if the learner goes on (their stale
            # results are never read).
            for call in running.values():
                call.slot.busy = False
            raise
        return [results[i] for i in range(len(calls))], reissued

    def share(self, flat: np.ndarray):
        """Flat parameters as the calls take them, made once for all of them: the array
        itself when small (measured ~2.4 ms a step cheaper on the sinusoid MLP), else one
        object in Ray's store that every worker reads."""
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
            if slot.actor is not None:
                ray.kill(slot.actor)
                slot.actor = None

    # -- internals --------------------------------------------------------------------

    def _start(self, slot: _Slot) -> None:
        slot.actor = self._remote.remote(*self._init_args)
        slot.ready_ref = slot.actor.__ray_call__.remote(_whereabouts)
        slot.node, slot.pid, slot.busy = "", 0, False
        slot.starts += 1

    def _finish_start(self, slot: _Slot) -> None:
        try:
            slot.node, slot.pid = ray.get(slot.ready_ref)
        except RayActorError as exc:
            if exc.actor_init_failed:
                raise WorkerLostError(
                    f"worker: could not start ({_last_line(exc)}); fix the error above and rerun"
                ) from None
            slot.start_losses += 1
            self._event("worker_lost", slot, f"lost while starting ({_first_line(exc)})")
            if slot.start_losses >= self.max_attempts:
                raise WorkerLostError(
                    f"worker: lost while starting {slot.start_losses} times in a row (last: "
                    f"{_first_line(exc)}); see the workers' logs above"
                ) from None
            self._start(slot)
            return
        except RayError as exc:  # e.g. its placement group removed: it can never start
            raise WorkerLostError(f"worker: cannot be placed ({_first_line(exc)})") from None
        slot.ready_ref, slot.start_losses = None, 0
        if slot.starts == 1:
            self._event("worker_started", slot, "started")
        else:
            self._event("worker_replaced", slot, "replacement ready")

    def _dispatch(self, method: str, calls: Sequence[tuple], queue: list[int],
                  running: dict[object, _Call]) -> None:
        size = len(self._slots)
        for slot in self._slots:
            if not queue or not slot.ready or slot.busy:
                continue
            own = [i for i in queue if i % size == slot.index]
            orphans = [i for i in queue if not self._slots[i % size].ready]
            index = (own or orphans or queue)[0]
            queue.remove(index)
            ref = getattr(slot.actor, method).remote(*calls[index])
            running[ref] = _Call(index, slot, time.monotonic())
            slot.busy = True

    def _lose(self, call: _Call, why: str, method: str, context: str, queue: list[int],
              attempts: list[int]) -> None:
        """Requeue a call whose worker is gone (or hung: kill it) and restart the slot."""
        slot = call.slot
        attempts[call.index] += 1
        what = f"shard {call.index}" + (f" of {context}" if context else "")
        self._event("worker_lost", slot, f"{why} while running {what} ({method})")
        if attempts[call.index] >= self.max_attempts:
            raise WorkerLostError(
                f"{what}: lost its worker {attempts[call.index]} times (last: {why}); "
                f"raise runtime.max_shard_attempts (now {self.max_attempts}) if workers die this often"
            )
        ray.kill(slot.actor, no_restart=True)
        self._start(slot)
        queue.insert(0, call.index)

    def straggler_limit(self, method: str) -> float:
        """Seconds after which a call of `method` counts as a straggler now."""
        if self.timeout_s is not None:
            return self.timeout_s
        recent = self.durations.get(method)
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

    def _event(self, kind: str, slot: _Slot, detail: str) -> None:
        event = {"event": kind, "worker": slot.index, "node": slot.node, "pid": slot.pid,
                 "detail": detail, "time": time.time()}
        if self._on_event is not None:
            self._on_event(event)


def _fetch(refs: list) -> list[tuple[object, BaseException | None]]:
    """(value, None) or (None, the worker's loss) per ref; one `ray.get` when none is lost.
    An exception raised by the call's own code propagates."""
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _last_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__
