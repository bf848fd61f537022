"""`RunDirectory`: a training run's folder on disk.

    DIR/config.yaml        the resolved config
    DIR/metrics.jsonl      one JSON line per iteration
    DIR/events.jsonl       worker events (started, lost, replaced)
    DIR/tensorboard/       the metrics lines as TensorBoard scalars (`tensorboard --logdir DIR`)
    DIR/checkpoints/       ckpt-NNNNNNN.pt, the newest `runtime.keep_checkpoints` kept
    DIR/.lock              held by the run writing the folder: a second one is refused

`check` decides, before any work and writing nothing, whether the folder may hold a new
run or which checkpoint a resume continues from; `open` then writes the config and cuts
metrics lines past that checkpoint, so a resumed run appends without gaps or repeats.
Every file is replaced atomically or appended one whole line at a time."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import BinaryIO, TextIO

import yaml

from distmeta.config import Config, TaskConfig
from distmeta.errors import ConfigError, UserError
from distmeta.fileio import atomic_write, check_can_create, take_lock
from distmeta.runtime.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from distmeta.schema import first_difference, plain
from distmeta.tasks import resolve_family

logger = logging.getLogger(__name__)

# Keys that may change between a run and its resumption without changing its results.
RESUMABLE_CHANGES = ("iterations", "num_workers", "checkpoint_every", "runtime", "task.data_dir")


def with_defaults(raw: dict) -> dict:
    """`raw` with the keys it leaves unset at their defaults (the config's, and the task
    family's for task options), so that a key distmeta or a family gained after a run
    started compares equal to its default on resume: new keys default to the old behaviour."""
    defaults = Config().to_dict()
    del defaults["task"]  # a family's options have the family's defaults, below
    raw = {**defaults, **raw}
    for section, values in defaults.items():
        if isinstance(values, dict) and isinstance(raw[section], dict):
            raw[section] = {**values, **raw[section]}
    task = raw.get("task")
    if not isinstance(task, dict):
        return raw
    try:
        family = resolve_family(task.get("family", TaskConfig.family))
    except ConfigError:
        return raw  # the resumed config names the family it cannot build
    if not dataclasses.is_dataclass(family):
        return raw
    defaults = {f.name: f.default for f in dataclasses.fields(family)
                if f.init and f.default is not dataclasses.MISSING}
    return {**raw, "task": {**plain(defaults), **task}}


class RunDirectory:
    """The folder of one training run (see the module's docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self._metrics: TextIO | None = None
        self._tensorboard = None
        self._lock: BinaryIO | None = None
        self._seen: tuple | None = None

    def check(self, config: Config, resume: bool) -> dict | None:
        """Raise `UserError` if the folder cannot take this run; with `resume`, the state of
        its newest readable checkpoint (checked against `config`)."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--out: {self.path} is a file; expected a run directory")
        check_can_create(self.path, "--out")
        metrics = self.path / "metrics.jsonl"
        found = list_checkpoints(self.checkpoints)
        self._seen = self._snapshot()
        if not resume:
            if found or metrics.exists():
                raise UserError(
                    f"--out: {self.path} already holds a run; pass --resume to continue it "
                    "or choose another --out"
                )
            return None
        if not found:
            # Stopped before its first checkpoint (killed): it starts over, a run being the
            # same from the start; the folder's metrics lines are dropped by `open`.
            saved = self._saved_config()
            if saved is None:
                raise UserError(f"--resume: no checkpoint in {self.checkpoints}; start it without --resume")
            self._check_same(saved, config)
            return None
        state = _newest_readable(found)
        self._check_same(state["config"], config)
        if state["iteration"] > config.iterations:
            raise UserError(
                f"iterations: got {config.iterations}, but the checkpoint is at iteration "
                f"{state['iteration']}; expected at least that"
            )
        return state

    def _saved_config(self) -> dict | None:
        """The run's config.yaml as plain data; None when there is none."""
        path = self.path / "config.yaml"
        if not path.is_file():
            return None
        try:
            saved = yaml.safe_load(path.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise UserError(f"--resume: cannot read {path} ({type(exc).__name__}); start the run again "
                            "in another --out") from None
        if not isinstance(saved, dict):
            raise UserError(f"--resume: {path} is not a run's config; start the run again in another --out")
        return saved

    def _check_same(self, saved: dict, config: Config) -> None:
        diff = first_difference(with_defaults(saved), with_defaults(config.to_dict()),
                                ignore=RESUMABLE_CHANGES)
        if diff is not None:
            key, was, current = diff
            raise UserError(
                f"--resume: config key '{key}' is {current!r} but the run in {self.path} used "
                f"{was!r}; resume with the run's config"
            )

    def open(self, config: Config, iteration: int) -> None:
        """Take the folder (one run writes it at a time: `.lock`, held until `close` or the
        process ends), write config.yaml, keep metrics lines up to `iteration` and open
        metrics.jsonl for appending."""
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = take_lock(self.path)
        try:
            if self._snapshot() != self._seen:  # another run wrote here since `check`
                raise UserError(f"--out: {self.path} changed while this run started (another distmeta run "
                                "wrote to it); look at it, then rerun")
            _truncate_metrics(self.path / "metrics.jsonl", iteration)
            atomic_write(self.path / "config.yaml",
                         lambda f: f.write(yaml.safe_dump(config.to_dict(), sort_keys=False).encode()))
            # Opened once, line-buffered: each line reaches the OS whole as it is written.
            self._metrics = open(self.path / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115 - closed in close()
            self._tensorboard = _open_tensorboard(self.path / "tensorboard", iteration)
        except BaseException:
            self.close()
            raise

    def write_metrics(self, line: dict) -> None:
        if self._metrics is not None:
            self._metrics.write(json.dumps(line) + "\n")
        if self._tensorboard is not None:
            self._tensorboard.add_summary(_summary(line), line["iteration"])

    def write_event(self, event: dict) -> None:
        with open(self.path / "events.jsonl", "a") as f:
            f.write(json.dumps(event) + "\n")

    def save_checkpoint(self, iteration: int, state: dict, keep: int) -> Path:
        return save_checkpoint(self.checkpoints, iteration, state, keep)

    def _snapshot(self) -> tuple:
        """What `open` compares with `check`'s view: the checkpoints and the metrics' size."""
        metrics = self.path / "metrics.jsonl"
        return ([p.name for p in list_checkpoints(self.checkpoints)],
                metrics.stat().st_size if metrics.exists() else None)

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # releases the lock
            self._lock = None
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None


def _newest_readable(found: list[Path]) -> dict:
    """The state of the newest checkpoint that loads. A damaged newer one (cut short by a
    disk error or a copy, which an atomic rename alone cannot prevent) is skipped with a
    warning: resuming from the one before costs only the iterations since."""
    for path in reversed(found):
        try:
            return load_checkpoint(path)
        except UserError as exc:
            logger.warning("--resume: skipping %s (%s); trying the checkpoint before it", path.name, exc)
    raise UserError(f"--resume: no readable checkpoint in {found[0].parent}; start it without --resume")


def _truncate_metrics(path: Path, iteration: int) -> None:
    """Drop metrics lines past the checkpoint so the resumed run appends without gaps."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            break  # a line cut short by the kill that ended the run
        if not isinstance(entry, dict) or not isinstance(entry.get("iteration"), int):
            break
        if entry["iteration"] <= iteration:
            kept.append(line)
    atomic_write(path, lambda f: f.write("".join(k + "\n" for k in kept).encode()))


def _open_tensorboard(folder: Path, iteration: int):
    """An event file for the metrics from `iteration` on. A resumed run first marks a
    restart at its next step, so TensorBoard drops what an interrupted part wrote past the
    checkpoint (the metrics lines are cut the same way)."""
    from tensorboardX import FileWriter  # Ray Tune's dependency; 1 s to import, so only here
    from tensorboardX.proto.event_pb2 import Event, SessionLog

    # Each part its own file (named by time, then by the iteration it starts from): a part
    # started within the same second as the last must not overwrite its file.
    writer = FileWriter(str(folder), flush_secs=10, filename_suffix=f".from{iteration:010d}")
    if iteration > 0:
        writer.add_event(Event(step=iteration + 1, session_log=SessionLog(status=SessionLog.START)))
    return writer


def _summary(line: dict, prefix: str = ""):
    """One Summary of every number in a metrics line (`post_adaptation/loss`, ...): one
    event per iteration, 0.1 ms here, where one `add_scalar` per metric took 1 ms."""
    from tensorboardX.proto.summary_pb2 import Summary

    values = []
    for key, value in line.items():
        if isinstance(value, dict):
            values += _summary(value, f"{prefix}{key}/").value
        elif isinstance(value, (int, float)) and key != "iteration":
            values.append(Summary.Value(tag=prefix + key, simple_value=float(value)))
    return Summary(value=values)
