"""Ray connection and resource arithmetic, shared by `distmeta train` (the learner's
workers) and `distmeta tune` (each trial's placement group).

Each check raises a one-line `UserError` naming the key to change: before Ray starts where
this machine's CPUs already decide it, after connecting for what the cluster has."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from collections.abc import Callable

from distmeta.errors import UserError


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def machine_memory() -> int | None:
    """This machine's memory in bytes (MemTotal), None where /proc does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def ensure_ray(address: str | None, needed_cpus: float, shortfall: Callable[[str], str]) -> bool:
    """Connect to the cluster at `address`, or start a local Ray, unless Ray is already up;
    then check that it has `needed_cpus`. `shortfall(have)` words the error ("this machine
    has 2"). A bad `address` is an error even when Ray is up (which is then used as it is).
    Returns whether this call connected (the caller shuts Ray down)."""
    import ray

    if address is not None:
        check_address(address)
    started = False
    if not ray.is_initialized():
        if address is None and needed_cpus > usable_cpus():
            raise UserError(shortfall(f"this machine has {usable_cpus()}"))
        _connect(address)
        started = True
    have = ray.cluster_resources().get("CPU", 0)
    if needed_cpus > have:
        if started:
            ray.shutdown()
        raise UserError(shortfall(f"the Ray cluster has {have:g}"))
    return started


def cluster_gpus() -> float:
    import ray

    return ray.cluster_resources().get("GPU", 0)


def gpus_per_worker(requested: float | None, cluster_gpus: float, num_workers: int) -> float:
    """Unset: one GPU each when there are enough, else an even share (packing several
    workers per GPU), none on a CPU-only cluster."""
    if requested is not None:
        return requested
    if cluster_gpus <= 0:
        return 0
    return min(1.0, math.floor(cluster_gpus / num_workers * 1e4) / 1e4)


def _connect(address: str | None) -> None:
    """Start a local Ray (no dashboard), or connect to the cluster at (a checked) `address`."""
    import ray

    if address is None:
        try:
            ray.init(include_dashboard=False, logging_level="ERROR",  # type: ignore[arg-type]
                     log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:  # e.g. a stale RAY_ADDRESS
            raise UserError(f"ray: cannot start a local Ray: {_first_line(exc)}") from None
        return
    try:
        ray.init(address=address, logging_level="ERROR")  # type: ignore[arg-type]
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UserError(f"--address: cannot connect to Ray at {address}: {_first_line(exc)}") from None


def check_address(address: str) -> None:
    """`--address` is HOST:PORT (or ray://HOST:PORT) of a reachable host, or `auto`."""
    if address == "auto":
        return
    host, _, port = address.rpartition(":")
    host = host.removeprefix("ray://")
    if not host or not port.isdigit():
        raise UserError(f"--address: got '{address}'; expected HOST:PORT or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise UserError(f"--address: cannot reach a Ray cluster at {address}: {exc}") from None
    if not address.startswith("ray://"):  # Ray Client's port speaks another protocol
        _probe_gcs(address)


# A head node's GCS answers at once; a port that accepts connections but is not a GCS (a
# web server, the dashboard's port) leaves `ray.init` retrying for minutes, printing
# Ray's C++ log lines.
PROBE_TIMEOUT_S = 15.0


def _probe_gcs(address: str) -> None:
    """One request to the GCS at `address` from a child process, so that a port that is not
    Ray's fails within PROBE_TIMEOUT_S and Ray's retry lines never reach the console."""
    code = ("import sys; from ray._raylet import GcsClient; "
            "GcsClient(address=sys.argv[1]).internal_kv_get(b'distmeta-probe', None, timeout=10)")
    hint = "expected the head node's GCS port (6379 unless `ray start --port` set another)"
    try:
        probe = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True,
                               timeout=PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise UserError(f"--address: {address} accepts connections but no Ray GCS answered in "
                        f"{PROBE_TIMEOUT_S:g} s; {hint}") from None
    if probe.returncode != 0:
        lines = [line for line in probe.stderr.splitlines() if line.strip()]
        raise UserError(f"--address: {address} is not a Ray cluster's GCS "
                        f"({lines[-1][:200] if lines else f'exit {probe.returncode}'}); {hint}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
