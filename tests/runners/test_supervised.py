"""The supervised shard runner's task prefetch: a call served from tasks sampled ahead
gives the bits of one that samples its own."""

import numpy as np
from helpers import observable_config, sine_config

from distmeta.experiment import build_experiment


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
    runner._last_shard = (0, (0, 1))  # as after a call of iteration 0
    runner.idle()  # the family's first sample raises here, and is dropped
    assert runner._prefetched is None and (tmp_path / "failed").exists()
    fresh = build_experiment(observable_config(workers=0)).make_runner()
    _same(runner.meta_grad(meta, 1, [0, 1]), fresh.meta_grad(meta, 1, [0, 1]))
