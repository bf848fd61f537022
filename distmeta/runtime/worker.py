"""`Worker`: one adaptation worker of the pool: its Ray actor, its direct channel, and how a
call reaches it.

Ray places, starts and kills the actor; once it runs, it opens its channel
(`channel.serve`) and the learner connects. A call whose arguments are plain values goes
over the channel; one that carries an object of Ray's store is a Ray actor call, its
result split in three objects when the gradient is to stay in the store (`keep_gradients`:
the learner reads only the task count and the metrics)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import ray
from ray.actor import ActorClass
from ray.exceptions import NodeDiedError, ObjectLostError, RayActorError, RayError, WorkerCrashedError

from distmeta.errors import RunError
from distmeta.runtime import channel
from distmeta.runtime.channel import Channel

# Failures of the worker rather than of the shard's code: the call is re-run elsewhere.
WORKER_LOST = (RayActorError, WorkerCrashedError, NodeDiedError, ObjectLostError)


class WorkerLostError(RunError):
    """A shard lost its worker `max_attempts` times, or a worker could not start."""


class WorkerStartLost(Exception):
    """A worker was lost while it started (its text says how); the pool may start another."""


def _started(runner, authkey: bytes) -> tuple[str, int, tuple | None]:
    """On the worker, once built: its node, process id and direct channel's address."""
    return ray.get_runtime_context().get_node_id(), os.getpid(), channel.serve(runner, authkey)


@dataclass
class Call:
    """One call in flight."""

    index: int
    slot: Worker
    started: float
    seq: int = 0  # its number on the worker's channel, if sent there
    fetch: tuple = ()  # a Ray call's references that the learner reads
    stored: Any = None  # a Ray call's gradient, left in Ray's store


@dataclass
class Worker:
    """Slot `index` of the pool: the actor in it now (a replacement takes the same slot)."""

    index: int
    remote: ActorClass
    init_args: tuple
    authkey: bytes  # the channel's key, fresh for each slot
    actor: Any = None  # a Ray actor handle
    ready_ref: Any = None  # set while the actor is starting
    node: str = ""
    pid: int = 0
    channel: Channel | None = None  # the direct channel, once connected
    busy: bool = False
    starts: int = 0
    start_losses: int = 0  # in a row

    def __post_init__(self):
        self.start()

    @property
    def ready(self) -> bool:
        return self.actor is not None and self.ready_ref is None

    def start(self) -> None:
        self.actor = self.remote.remote(*self.init_args)
        self.ready_ref = self.actor.__ray_call__.remote(_started, self.authkey)
        self.node, self.pid, self.busy = "", 0, False
        self.starts += 1

    def finish_start(self) -> tuple[str, str]:
        """Once `ready_ref` is done: connect the channel; the event to report (kind,
        detail). Raises WorkerStartLost, or WorkerLostError if it can never start."""
        try:
            self.node, self.pid, address = ray.get(self.ready_ref)
        except RayActorError as exc:
            if exc.actor_init_failed:
                raise WorkerLostError(
                    f"worker: could not start ({_last_line(exc)}); fix the error above and rerun"
                ) from None
            self.start_losses += 1
            raise WorkerStartLost(first_line(exc)) from None
        except RayError as exc:  # e.g. its placement group removed: it can never start
            raise WorkerLostError(f"worker: cannot be placed ({first_line(exc)})") from None
        self.ready_ref, self.start_losses = None, 0
        how = ""
        try:
            self.channel = Channel(address, self.authkey) if address is not None else None
        except channel.UNREACHABLE as exc:
            how = f"; its direct channel is out of reach ({first_line(exc)}): calls go through Ray"
        if self.starts == 1:
            return "worker_started", "started" + how
        return "worker_replaced", "replacement ready" + how

    def send(self, index: int, method: str, args: tuple, keep_gradients: bool,
             idle_after: bool = False) -> tuple[object, Call]:
        """Start call `index`; what to wait on (its channel or a Ray reference) and the call.
        `idle_after`: no other call is queued for this worker (see `Channel.send`)."""
        self.busy = True
        now = time.monotonic()
        if self.channel is not None and not any(isinstance(a, ray.ObjectRef) for a in args):
            return self.channel, Call(index, self, now, seq=self.channel.send(method, args, idle_after))
        if keep_gradients:  # (gradient, tasks, metric sums) as three objects
            grad, tasks, sums = getattr(self.actor, method).options(num_returns=3).remote(*args)
            return tasks, Call(index, self, now, fetch=(tasks, sums), stored=grad)
        ref = getattr(self.actor, method).remote(*args)
        return ref, Call(index, self, now, fetch=(ref,))

    def stop(self) -> None:
        """Close the channel and kill the actor (no late result can arrive)."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.actor is not None:
            ray.kill(self.actor, no_restart=True)
            self.actor = None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _last_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__
