"""The supervised shard runner: its task prefetch (a call served from tasks sampled ahead
gives the bits of one that samples its own) and its test-time BatchNorm statistics
(`model.batch_norm: population`)."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import observable_config, sine_config

from distmeta.errors import ConfigError
from distmeta.experiment import build_experiment
from distmeta.loading import load_config
from distmeta.runners.supervised import POPULATION_EPISODES
from distmeta.tasks import eval_task_rng


def _runner_and_meta():
    experiment = build_experiment(sine_config(meta_batch_size=6))
    runner = experiment.make_runner()
    return runner, runner.layout.flatten(experiment.initial_meta_params()).numpy()


def _same(a, b):
    assert np.array_equal(a[0], b[0]) and a[1:] == b[1:]


def test_the_next_shard_sampled_while_idle_gives_the_bits_of_a_fresh_sample():
    runner, meta = _runner_and_meta()
    fresh, _ = _runner_and_meta()
    runner.meta_grad(meta, 2, [3, 4, 5])
    runner.idle()
    assert runner._prefetched[0] == (3, (3, 4, 5))
    _same(runner.meta_grad(meta, 3, [3, 4, 5]), fresh.meta_grad(meta, 3, [3, 4, 5]))
    assert runner._prefetched is None  # used once


def test_a_call_for_another_shard_or_iteration_samples_its_own_tasks():
    runner, meta = _runner_and_meta()
    fresh, _ = _runner_and_meta()
    runner.meta_grad(meta, 2, [3, 4, 5])
    runner.idle()
    _same(runner.meta_grad(meta, 3, [0, 1, 2]), fresh.meta_grad(meta, 3, [0, 1, 2]))
    runner.idle()
    _same(runner.meta_grad(meta, 9, [0, 1, 2]), fresh.meta_grad(meta, 9, [0, 1, 2]))


def test_with_two_shards_in_an_iteration_the_first_is_sampled_ahead():
    runner, meta = _runner_and_meta()
    fresh, _ = _runner_and_meta()
    runner.meta_grad(meta, 4, [0, 1])
    runner.meta_grad(meta, 4, [4, 5])
    runner.idle()
    assert runner._prefetched[0] == (5, (0, 1))  # the call that comes first next iteration
    _same(runner.meta_grad(meta, 5, [0, 1]), fresh.meta_grad(meta, 5, [0, 1]))
    _same(runner.meta_grad(meta, 5, [4, 5]), fresh.meta_grad(meta, 5, [4, 5]))


def test_idle_before_any_call_or_twice_samples_nothing():
    runner, meta = _runner_and_meta()
    runner.idle()
    assert runner._prefetched is None
    runner.meta_grad(meta, 0, [0, 1])
    runner.idle()
    runner.idle()  # the second finds nothing new to prefetch and keeps the first's
    assert runner._prefetched[0] == (1, (0, 1))


def test_a_family_error_while_prefetching_is_dropped_and_the_call_samples_again(tmp_path):
    config = observable_config(workers=0, marker_dir=str(tmp_path), fail_once=True)
    runner = build_experiment(config).make_runner()
    meta = runner.layout.flatten(build_experiment(config).initial_meta_params()).numpy()
    runner._ahead = (1, (0, 1))  # as after a call of iteration 0
    runner.idle()  # the family's first sample raises here, and is dropped
    assert runner._prefetched is None and (tmp_path / "failed").exists()
    fresh = build_experiment(observable_config(workers=0)).make_runner()
    _same(runner.meta_grad(meta, 1, [0, 1]), fresh.meta_grad(meta, 1, [0, 1]))


# -- model.batch_norm: population -----------------------------------------------------


def _protonet(omniglot_dir, batch_norm):
    config = load_config("omniglot-protonet", [f"task.data_dir={omniglot_dir}", "model.channels=8", "task.n_way=5",
                                               "task.q_query=3", f"model.batch_norm={batch_norm}"])
    experiment = build_experiment(config)
    runner = experiment.make_runner()
    meta = experiment.initial_meta_params()
    return experiment, runner, meta, runner.layout.flatten(meta).numpy()


@pytest.mark.parametrize("batch_norm", ["batch", "population"])
def test_with_population_statistics_a_query_is_scored_on_its_own(omniglot_dir, batch_norm):
    experiment, runner, meta, flat = _protonet(omniglot_dir, batch_norm)
    task = experiment.family.sample([eval_task_rng(0, "test", 0)], "test")
    support = (task["support_x"][0], task["support_y"][0])
    queries = task["query_x"][0]

    def scores(x):
        return runner.algorithm.predict(meta, runner.test_buffers(flat), support, x, runner.test_problem)

    with torch.no_grad():
        alone, together = scores(queries[:1]), scores(queries)[:1]
    if batch_norm == "population":  # non-transductive: the other queries change nothing
        torch.testing.assert_close(alone, together, rtol=1e-5, atol=1e-5)
    else:  # each batch is normalised with its own statistics
        assert (alone - together).abs().max() > 1e-3


def test_population_statistics_are_the_episodes_batch_statistics_averaged(omniglot_dir):
    experiment, runner, meta, flat = _protonet(omniglot_dir, "population")
    means, variances = [], []
    for first in range(0, POPULATION_EPISODES, 10):  # the first conv layer's outputs, by hand
        tasks = experiment.family.sample([eval_task_rng(0, "train", i) for i in range(first, first + 10)], "train")
        for i in range(10):
            x = torch.cat([tasks["support_x"][i], tasks["query_x"][i]])
            h = F.conv2d(x, meta["body.0.weight"], meta["body.0.bias"], padding=1)
            means.append(h.mean((0, 2, 3)))
            variances.append(h.var((0, 2, 3)))
    buffers = runner.test_buffers(flat)
    torch.testing.assert_close(buffers["body.1.running_mean"], torch.stack(means).mean(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(buffers["body.1.running_var"], torch.stack(variances).mean(0), rtol=1e-4, atol=1e-5)
    assert sorted(k for k in buffers if k.startswith("body.1.")) == [
        "body.1.num_batches_tracked", "body.1.running_mean", "body.1.running_var"]
    assert runner.test_buffers(flat) is buffers  # once per meta-parameters
    assert runner.test_buffers(flat * 0.5) is not buffers


def test_population_statistics_come_from_episodes_of_the_training_shape(omniglot_dir):
    # Snell's running averages saw only training batches (60-way): the way an evaluation
    # tests must not change the statistics it normalises with.
    trained, runner, _, flat = _protonet(omniglot_dir, "population")  # 5-way, 3 queries
    config = load_config("omniglot-protonet", [f"task.data_dir={omniglot_dir}", "model.channels=8", "task.n_way=3",
                                               "task.q_query=2", "model.batch_norm=population"])
    tested = dataclasses.replace(build_experiment(config), trained_shape=trained.family.episode_shape)
    expected, got = runner.test_buffers(flat), tested.make_runner().test_buffers(flat)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    test_shaped = build_experiment(config).make_runner().test_buffers(flat)
    assert not torch.allclose(test_shaped["body.1.running_var"], expected["body.1.running_var"])


def test_evaluation_with_population_statistics_runs_and_differs_from_batch_statistics(omniglot_dir):
    scored = {}
    for batch_norm in ("batch", "population"):
        _, runner, _, flat = _protonet(omniglot_dir, batch_norm)
        scored[batch_norm] = runner.evaluate(flat, "test", [0, 1, 2], 0, 0)
    for name in ("post_accuracy", "post_loss"):
        assert scored["population"][name].shape == (3,)
    assert not np.allclose(scored["population"]["post_loss"], scored["batch"]["post_loss"])


@pytest.mark.parametrize("overrides, message", [
    (["model.batch_norm=running"], "model.batch_norm"),
    (["task.family=sinusoid", "model.name=mlp", "model.batch_norm=population"],
     "model.batch_norm: population needs a model with BatchNorm (conv4)"),
])
def test_batch_norm_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_experiment(load_config("sinusoid-maml", overrides))


def test_a_meta_rl_policy_takes_no_batch_norm_option():
    with pytest.raises(ConfigError, match="model.batch_norm: population is for Conv4's BatchNorm"):
        build_experiment(load_config("nav2d-maml", ["model.batch_norm=population"]))
