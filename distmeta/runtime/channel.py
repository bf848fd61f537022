"""The direct channel from the learner to one worker, for calls too small for Ray's per-call
cost.

A Ray actor call costs about 1.6 ms round trip on a 2-core machine, against a 7 ms sinusoid
step; this channel costs about 0.14 ms (benchmarks/call_latency.py). It is a `multiprocessing.connection` socket that a
thread in the worker serves, one call at a time, after a challenge with a key only the
learner and the worker hold (whoever fails it is dropped before anything is unpickled).
Ray still places, starts, kills and replaces the workers; the pool sends a call here when
its arguments are plain values (see `WorkerPool.share`). After the reply to a call that
the learner marks as the worker's last queued one, the thread runs the runner's `idle()`,
if it has one, while the learner takes its outer step.

A worker whose process ends closes its end: the call in flight is lost
(`ChannelClosedError`) and the pool re-runs it elsewhere, as for a Ray call. An exception
raised by the shard's own code is raised on the learner with the worker's traceback
chained below it (`RemoteTraceback`)."""

from __future__ import annotations

import socket
import threading
import traceback
from multiprocessing import AuthenticationError
from multiprocessing.connection import Connection, Listener, answer_challenge, deliver_challenge

import ray

from distmeta.errors import RunError

# How long the learner tries to reach a worker's channel before its calls go through Ray.
CONNECT_TIMEOUT_S = 10.0
UNREACHABLE = (OSError, AuthenticationError, EOFError)


class ChannelClosedError(ConnectionError):
    """A worker's channel closed under a call: its process ended (killed, crashed, its
    node gone)."""


class RemoteTraceback(Exception):
    """The worker's traceback of an exception raised by a shard's own code, chained below
    the exception itself (its text is the traceback)."""


def serve(runner, authkey: bytes) -> tuple | None:
    """On the worker: listen on the node's address and answer the learner's calls on a
    thread. Returns the address to connect to (None: no socket could be opened)."""
    try:
        listener = Listener((ray.util.get_node_ip_address(), 0), authkey=authkey)
    except OSError:
        return None
    threading.Thread(target=_answer, args=(runner, listener), name="distmeta-channel", daemon=True).start()
    return listener.address


def _answer(runner, listener: Listener) -> None:
    """Answer calls `(seq, method, args)` with `(seq, "ok", value, None)` or
    `(seq, "error", exception, traceback)` until the learner closes the channel."""
    with listener:
        while True:
            try:
                conn = listener.accept()
                break
            except UNREACHABLE:
                continue
    # Work the runner can do before the next call arrives (e.g. sample its tasks).
    idle = getattr(runner, "idle", None)
    with conn:
        while True:
            try:
                seq, method, args, idle_after = conn.recv()
            except (EOFError, OSError):
                return
            reply: tuple
            try:
                reply = (seq, "ok", getattr(runner, method)(*args), None)
            except Exception as exc:  # noqa: BLE001 - the shard's own error, raised on the learner
                reply = (seq, "error", exc, traceback.format_exc())
            try:
                conn.send(reply)
            except (EOFError, OSError):
                return
            except Exception:  # noqa: BLE001 - the exception or the value cannot be pickled: its text
                conn.send((seq, "error", None, traceback.format_exc() if reply[1] == "ok" else reply[3]))
            if idle_after and idle is not None:
                idle()


class Channel:
    """The learner's end of one worker's channel: `send` a call, `receive` its reply;
    `multiprocessing.connection.wait` takes its `fileno()`."""

    def __init__(self, address: tuple, authkey: bytes):
        sock = socket.create_connection(address, timeout=CONNECT_TIMEOUT_S)
        sock.setblocking(True)
        self._conn = Connection(sock.detach())
        try:
            answer_challenge(self._conn, authkey)
            deliver_challenge(self._conn, authkey)
        except BaseException:
            self._conn.close()
            raise
        self._sent = 0

    def fileno(self) -> int:
        return self._conn.fileno()

    def send(self, method: str, args: tuple, idle_after: bool = False) -> int:
        """Send a call; its number, which its reply carries. `idle_after`: no other call
        is queued for this worker, so after replying it may work ahead (`idle`)."""
        self._sent += 1
        try:
            self._conn.send((self._sent, method, args, idle_after))
        except OSError:
            pass  # the worker is gone: `receive` finds the channel closed
        return self._sent

    def receive(self, seq: int) -> tuple[object, BaseException | None] | None:
        """(value, None) or (None, ChannelClosedError) for call `seq`, once the channel has
        something to read; None for the reply of a call the learner gave up on. An
        exception raised by the call's own code is raised here."""
        try:
            number, status, value, remote_traceback = self._conn.recv()
        except (EOFError, OSError) as exc:
            return None, ChannelClosedError(f"the worker's process ended ({type(exc).__name__} on its channel)")
        if number != seq:
            return None
        if status == "ok":
            return value, None
        cause = RemoteTraceback(f'\n"""\n(on the worker)\n{remote_traceback}"""')
        if value is None:
            raise RunError(f"worker: {remote_traceback.strip().splitlines()[-1]}") from cause
        raise value from cause

    def close(self) -> None:
        self._conn.close()
