"""A family's sampled tasks checked in the driver before any worker starts: one line naming
the family, the key, what came and what was expected."""

import itertools
from dataclasses import dataclass

import numpy as np
import pytest

from distmeta.errors import UserError
from distmeta.tasks.base import TaskFamily
from distmeta.tasks.check import check_sampled_tasks


@dataclass
class Episodes(TaskFamily):
    """3-way 2-shot tasks of 4-pixel inputs, which `change(task, rng)` can spoil."""

    kind = "classification"
    change: object = None

    @property
    def input_shape(self):
        return (4,)

    @property
    def output_dim(self):
        return 3

    def sample_task(self, rng, split):
        task = {"support_x": rng.random((6, 4), dtype=np.float32), "support_y": np.repeat(np.arange(3), 2),
                "query_x": rng.random((3, 4), dtype=np.float32), "query_y": np.arange(3)}
        return self.change(task, rng) if self.change else task


SIZES = itertools.cycle([2, 3])


def ragged(task):
    """2 queries, then 3: tasks that cannot be stacked."""
    k = next(SIZES)
    return {**task, "query_x": task["query_x"][:k], "query_y": task["query_y"][:k]}


def test_a_well_formed_family_passes():
    check_sampled_tasks(Episodes(), seed=0)


@pytest.mark.parametrize(("change", "message"), [
    (lambda t, r: [t], "sample_task returned a list; expected a dict of numpy arrays"),
    (lambda t, r: {k: v for k, v in t.items() if k != "query_y"}, "sample_task's dict lacks query_y"),
    (lambda t, r: {**t, "support_x": t["support_x"].tolist()}, "'support_x' is a list; expected a numpy array"),
    (lambda t, r: {**t, "support_x": t["support_x"][:, :3]}, "'support_x' is float32 (6, 3); expected float32 (n, 4)"),
    (lambda t, r: {**t, "query_x": t["query_x"].astype(np.float64)}, "'query_x' is float64 (3, 4)"),
    (lambda t, r: {**t, "support_y": t["support_y"] + 1}, ("'support_y' is int64 (6,) with values 1..3; expected "
                                                          "int64 (6,) class ids 0..2")),
    (lambda t, r: {**t, "query_y": t["query_y"][:2]}, "'query_y' is int64 (2,)"),
    (lambda t, r: ragged(t), "'query_x' is (3, 4) in one task and (2, 4) in another"),
    (lambda t, r: 1 / 0, "sample_task raised ZeroDivisionError: division by zero"),
    (lambda t, r: {**t, "query_x": np.where(t["query_x"] > 0.5, np.nan, t["query_x"]).astype(np.float32)},
     "'query_x' holds NaN or infinite values; expected finite numbers"),
])
def test_a_malformed_task_is_one_line_naming_the_key(change, message):
    with pytest.raises(UserError, match=r"^task.family test_check:Episodes: ") as info:
        check_sampled_tasks(Episodes(change=change), seed=0)
    assert message in str(info.value) and "\n" not in str(info.value)


@dataclass
class NoOutputs(Episodes):
    @property
    def output_dim(self):
        return 0


def test_a_family_without_outputs_is_one_line():
    with pytest.raises(UserError, match=r"^task.family test_check:NoOutputs: output_dim is 0; expected an "
                                        r"integer >= 1"):
        check_sampled_tasks(NoOutputs(), seed=0)


def test_a_learner_refuses_a_malformed_family_before_writing_or_starting_workers(tmp_path):
    from distmeta import Config, MetaLearner

    config = Config.from_dict({"iterations": 2, "meta_batch_size": 2, "num_workers": 2,
                               "task": {"family": "custom_family:FlatTargets"}})
    with pytest.raises(UserError, match=r"^task.family custom_family:FlatTargets: sample_task's 'support_y' is "
                                        r"float64 \(4,\); expected float32 \(4, 1\) targets"):
        MetaLearner(config, out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
