"""One Tune trial: a real `MetaLearner` whose adaptation workers live in the trial's
placement group, reporting window means and a checkpoint every `report_every` iterations.
Each report is also appended to `reports.jsonl` in the trial's directory (with the trial's
values and, after a restore, where the state came from).

Tune restores a trial from `tune.get_checkpoint()`: its own (resume after an interruption)
or, under PBT, a better trial's, with this trial's new hyperparameters."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from distmeta.config import Config
from distmeta.errors import DivergedError
from distmeta.loading import set_dotted
from distmeta.log import log_to_stderr
from distmeta.runtime.learner import MetaLearner

STATE_FILE = "learner.pt"
ORIGIN_FILE = "origin.json"
REPORTS_FILE = "reports.jsonl"

logger = logging.getLogger(__name__)


def run_trial(values: dict, base: dict, report_every: int, validation: dict, workdir: str) -> None:
    """The trainable: `values` are this trial's searched dotted keys, `base` the train config
    they are set on, `workdir` the driver's working directory."""
    from ray import tune

    # Tune starts each trial in its own directory; relative paths of the config (a data_dir)
    # mean what they meant where `distmeta tune` was typed.
    if Path(workdir).is_dir():
        os.chdir(workdir)
        if workdir not in sys.path:  # a user's family module there imports, as in the CLI
            sys.path.insert(0, workdir)

    # Tune's per-checkpoint INFO lines would drown the leaderboard; ours (worker losses)
    # reach the driver's console as the trial's stderr.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    log_to_stderr()
    raw = json.loads(json.dumps(base))
    for key, value in values.items():
        set_dotted(raw, key, value)
    config = Config.from_dict(raw)
    trial_id = tune.get_context().get_trial_id()
    reports = Path(tune.get_context().get_trial_dir()) / REPORTS_FILE
    with MetaLearner(config) as learner:
        restored = {}
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                learner.load_state(torch.load(Path(folder) / STATE_FILE, map_location="cpu",
                                              weights_only=True))
                origin = json.loads((Path(folder) / ORIGIN_FILE).read_text())
            restored = {"restored_from": f"{origin['trial_id']}@{origin['iteration']}",
                        "restored_params_sha": params_sha(learner)}
        while learner.iteration < config.iterations:
            n = min(report_every, config.iterations - learner.iteration)
            try:
                lines = [learner.step() for _ in range(n)]
            except DivergedError as exc:
                # A normal outcome of a search: the trial ends, and says why in one line
                # (results.json: status "diverged"), not in Ray's traceback of an error.
                with open(reports, "a") as f:
                    f.write(json.dumps({"trial_id": trial_id, "iteration": learner.iteration,
                                        "diverged": str(exc), "config": values}) + "\n")
                logger.warning("trial %s diverged: %s", trial_id, exc)
                return
            result = {**window_mean(lines), "iteration": learner.iteration,
                      "outer_lr": learner.optimizer.param_groups[0]["lr"],
                      "params_sha": params_sha(learner), **restored}
            restored = {}
            if validation["tasks"]:
                result["val"] = learner.validate(validation["tasks"], validation["split"], validation["seed"])
            flat = flatten(result)
            with open(reports, "a") as f:  # one whole line per report, whatever Tune's loggers do
                f.write(json.dumps({"trial_id": trial_id, **flat, "config": values}) + "\n")
            with tempfile.TemporaryDirectory() as folder:
                learner.save(Path(folder) / STATE_FILE)
                (Path(folder) / ORIGIN_FILE).write_text(
                    json.dumps({"trial_id": trial_id, "iteration": learner.iteration}))
                tune.report(flat, checkpoint=tune.Checkpoint.from_directory(folder))


def window_mean(lines: list[dict]) -> dict:
    """The mean of each numeric metric over a window of metrics lines (nested as they are)."""
    out: dict = {}
    for key, value in lines[0].items():
        if key in ("iteration", "time_s"):
            continue
        if isinstance(value, dict):
            out[key] = window_mean([line[key] for line in lines])
        else:
            out[key] = float(np.mean([line[key] for line in lines]))
    return out


def flatten(result: dict, prefix: str = "") -> dict:
    """`{"post_adaptation": {"loss": x}}` -> `{"post_adaptation/loss": x}`."""
    out = {}
    for key, value in result.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}/"))
        else:
            out[prefix + key] = value
    return out


def params_sha(learner: MetaLearner) -> str:
    """A short fingerprint of the meta-parameters: a restored trial's equals its source's."""
    flat = learner.layout.flatten(learner.meta).detach().cpu().numpy()
    return hashlib.sha1(flat.tobytes()).hexdigest()[:12]
