"""What several test modules share: configs, the CLI (in-process and as a subprocess),
training to the end, reading JSON lines."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from distmeta.config import Config
from distmeta.loading import apply_overrides

DISTMETA = shutil.which("distmeta")


def sine_raw(**sections) -> dict:
    """A small, fast sinusoid MAML config as plain data; keyword arguments replace keys."""
    return {
        "seed": 3, "iterations": 10, "meta_batch_size": 5, "num_workers": 0, "checkpoint_every": 5,
        "task": {"family": "sinusoid", "k_support": 5, "k_query": 5},
        "model": {"name": "mlp", "hidden_sizes": [16, 16]},
        "algorithm": {"name": "maml", "inner_lr": 0.02, "outer_lr": 0.01},
        **sections,
    }


def sine_config(**overrides) -> Config:
    """`sine_raw` as a Config, with dotted-key overrides (`sine_config(num_workers=2)`)."""
    return Config.from_dict(apply_overrides(sine_raw(), [f"{k}={v}" for k, v in overrides.items()]))


def observable_config(iterations=10, workers=2, runtime=None, **family) -> Config:
    """Sinusoid MAML on `faulty_family:Observable`, whose shards announce themselves."""
    return Config.from_dict({
        "seed": 5, "iterations": iterations, "meta_batch_size": 6, "num_workers": workers,
        "checkpoint_every": 5,
        "task": {"family": "faulty_family:Observable", "k_support": 5, "k_query": 5, **family},
        "model": {"name": "mlp", "hidden_sizes": [16, 16]},
        "algorithm": {"name": "maml", "inner_lr": 0.02, "outer_lr": 0.01},
        "runtime": {"resources_per_worker": {"cpu": 0.5}, **(runtime or {})},
    })


def train(config: Config, out_dir=None) -> dict:
    """The meta-parameters after training `config` to the end."""
    from distmeta.runtime.learner import MetaLearner

    with MetaLearner(config, out_dir=out_dir) as learner:
        learner.train()
        return {k: v.detach().clone() for k, v in learner.meta.items()}


def local_ray_address() -> str:
    """The address of this process's Ray (the shared local one), for a console script to
    join with `--address` instead of starting a Ray of its own."""
    import ray

    return ray.get_runtime_context().gcs_address


def in_process(config: Config) -> Config:
    """`config` run in this process on its own shards (`runtime.shards`): it ends with the
    bits of a fault-free run on its workers, and no worker has to start."""
    return replace(config, num_workers=0, runtime=replace(config.runtime, shards=config.shard_count))


class Killer(threading.Thread):
    """SIGKILLs the worker that announced the `every`-th shard start, `kills` times."""

    def __init__(self, marker_dir, kills, every):
        super().__init__(daemon=True)
        self.marker_dir, self.kills, self.every = marker_dir, kills, every
        self.killed: list[int] = []
        self.done = threading.Event()

    def run(self):
        seen = set()
        while not self.done.is_set() and len(self.killed) < self.kills:
            for marker in sorted(self.marker_dir.glob("started-*")):
                if marker.name in seen:
                    continue
                seen.add(marker.name)
                if len(seen) % self.every == 0:
                    pid = int(marker.name.split("-")[1])
                    os.kill(pid, signal.SIGKILL)  # mid-shard: the worker sleeps delay_s now
                    self.killed.append(pid)
            time.sleep(0.01)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def cli(*args) -> Result:
    """`distmeta ARGS...` in this process, through `distmeta.cli.main` (what the console
    script runs), with its exit code and output."""
    from distmeta.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse's own exits
            code = exc.code if isinstance(exc.code, int) else 1
    return Result(code, out.getvalue(), err.getvalue())


def run(*args, check=True, timeout=300) -> subprocess.CompletedProcess:
    """The installed `distmeta` console script in a subprocess, as a user types it."""
    assert DISTMETA, "the distmeta console script is not installed (pip install -e .)"
    proc = subprocess.run([DISTMETA, *map(str, args)], capture_output=True, text=True, check=False,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def one_error_line(result) -> str:
    """The single `error:` line a bad input prints (asserting there is exactly one)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def tensorboard_scalars(folder: Path) -> dict[str, list[float]]:
    """Scalars of the TensorBoard event files in `folder` (the TFRecord framing read by
    hand), in step order, as TensorBoard shows them: a restart marker (SessionLog START at
    step s) drops what earlier files logged at steps >= s."""
    from tensorboardX.proto import event_pb2

    by_step: dict[str, dict[int, float]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
                for steps in by_step.values():
                    for step in [s for s in steps if s >= event.step]:
                        del steps[step]
            for value in event.summary.value:
                by_step.setdefault(value.tag, {})[event.step] = value.simple_value
    return {tag: [steps[s] for s in sorted(steps)] for tag, steps in by_step.items()}
