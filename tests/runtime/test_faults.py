"""Faults on real Ray: SIGKILLed workers, a straggler, shards that kill every worker, a
worker that cannot start. Each run that survives must end with the bits of a fault-free
run: a re-run shard is counted once, never twice or partially."""

import time

import numpy as np
import pytest
import torch
from helpers import Killer, in_process, observable_config, read_jsonl, train

from distmeta.config import Config
from distmeta.errors import ConfigError
from distmeta.experiment import build_experiment
from distmeta.runtime import MetaLearner, pool
from distmeta.runtime.pool import WorkerLostError


def test_killed_workers_cost_a_rerun_of_their_shard_not_the_iteration(ray_local, tmp_path):
    reference = train(in_process(observable_config(iterations=12)))
    markers = tmp_path / "markers"
    markers.mkdir()
    killer = Killer(markers, kills=2, every=5)
    killer.start()
    params = train(observable_config(iterations=12, delay_s=0.4, marker_dir=str(markers)), tmp_path / "run")
    killer.done.set()

    assert len(killer.killed) == 2 and len(set(killer.killed)) == 2
    for k in reference:
        assert torch.equal(params[k], reference[k]), k
    lines = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [line["iteration"] for line in lines] == list(range(1, 13))
    assert sum(line["shards_reissued"] for line in lines) == 2
    events = read_jsonl(tmp_path / "run" / "events.jsonl")
    lost = [e for e in events if e["event"] == "worker_lost"]
    assert sorted(e["pid"] for e in lost) == sorted(killer.killed)
    # Sinusoid parameters travel inline, over the direct channels.
    assert all("ChannelClosedError: the worker's process ended" in e["detail"] for e in lost), lost
    # The last replacement may still be starting when the run ends.
    replaced = sum(e["event"] == "worker_replaced" for e in events)
    assert replaced in (1, 2), replaced


def test_a_straggler_past_the_timeout_is_replaced_and_its_shard_rerun(ray_local, tmp_path):
    reference = train(in_process(observable_config(iterations=8)))
    markers = tmp_path / "markers"
    markers.mkdir()
    # 0.5 s a shard: the replacement has time to start (~2 s) before the run ends. The
    # timeout leaves a healthy shard 12x its time: other test processes may share the CPUs.
    config = observable_config(iterations=8, marker_dir=str(markers), stall_s=120, delay_s=0.5,
                               runtime={"shard_timeout_s": 6})
    start = time.monotonic()
    params = train(config, tmp_path / "run")
    assert time.monotonic() - start < 60  # the stalled worker was not waited for
    for k in reference:
        assert torch.equal(params[k], reference[k]), k
    lines = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [line["shards_reissued"] for line in lines] == [1] + [0] * 7
    assert lines[-1]["workers"] == 2  # the replacement joined
    lost = [e for e in read_jsonl(tmp_path / "run" / "events.jsonl") if e["event"] == "worker_lost"]
    assert len(lost) == 1 and "past runtime.shard_timeout_s (6 s)" in lost[0]["detail"]


def test_the_automatic_timeout_waits_for_the_first_shards_then_scales_with_them(ray_local):
    from distmeta.runtime.pool import AUTO_TIMEOUT_FLOOR_S

    with MetaLearner(observable_config(iterations=2, workers=1, delay_s=0.05)) as learner:
        assert learner.executor.straggler_limit("meta_grad") == float("inf")
        learner.train()
        assert learner.executor.straggler_limit("meta_grad") == AUTO_TIMEOUT_FLOOR_S
        learner.executor.durations["meta_grad"].extend([30.0] * 10)
        assert learner.executor.straggler_limit("meta_grad") == 300.0


@pytest.mark.parametrize("transport", ["channel", "ray"])
def test_a_shard_that_kills_every_worker_ends_the_run_after_max_attempts(ray_local, monkeypatch, transport):
    if transport == "ray":  # parameters through Ray's store, as a large model's are: Ray's actor calls
        monkeypatch.setattr(pool, "INLINE_PARAMS_BYTES", 0)
    loss = {"channel": "ChannelClosedError", "ray": "ActorDiedError"}[transport]
    config = observable_config(workers=1, crash=True, runtime={"max_shard_attempts": 2})
    with pytest.raises(WorkerLostError, match=r"^shard \d of iteration 1: lost its worker 2 times "
                                              rf"\(last: lost \({loss}"):
        train(config)


def test_a_worker_that_cannot_start_is_one_error(ray_local):
    with pytest.raises(WorkerLostError, match=r"^worker: could not start \(FileNotFoundError: "
                                              r"/data/sine is missing on this node\)"):
        train(observable_config(workers=1, fail_to_start=True))


def test_a_resampled_rl_shard_equals_the_cached_one():
    """A meta-RL shard re-run on a fresh worker at a later outer step samples its episodes
    again from the iteration's first parameters: same gradient as the worker that kept them."""
    config = Config.from_dict({
        "seed": 2, "meta_batch_size": 2, "task": {"family": "gym", "env": "distmeta/Nav2D-v0", "horizon": 8},
        "model": {"hidden_sizes": [8]}, "rl": {"episodes_per_task": 2, "outer_steps": 2},
    })
    experiment = build_experiment(config)
    kept, fresh = experiment.make_runner(), experiment.make_runner()
    first = kept.layout.flatten(dict(kept.policy.named_parameters())).numpy()
    later = first + np.float32(0.01)
    kept.meta_grad(first, 3, [0, 1])
    cached_grad, _, _ = kept.meta_grad(later, 3, [0, 1])
    resampled_grad, _, metrics = fresh.meta_grad(later, 3, [0, 1], first)
    assert np.array_equal(cached_grad, resampled_grad)
    assert metrics["env_steps"] > 0
    stale_grad, _, _ = experiment.make_runner().meta_grad(later, 3, [0, 1])
    assert not np.array_equal(cached_grad, stale_grad)  # sampling with `later` would differ


def test_shard_timeout_and_attempts_are_validated():
    for key, value, message in [("shard_timeout_s", 0, "runtime.shard_timeout_s: got 0"),
                                ("max_shard_attempts", 0, "runtime.max_shard_attempts: got 0")]:
        with pytest.raises(ConfigError, match=message):
            observable_config(runtime={key: value})
