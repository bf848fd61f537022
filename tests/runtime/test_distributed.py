"""Real Ray actors on a real local Ray: same results as in-process, resume, bad setups."""

import dataclasses
import json

import pytest
import torch

from distmeta.config import Config
from distmeta.errors import UserError
from distmeta.runtime import MetaLearner
from distmeta.runtime.cluster import gpus_per_worker


def final_params(config, **kwargs):
    with MetaLearner(config, **kwargs) as learner:
        learner.train()
        return {k: v.detach().clone() for k, v in learner.meta.items()}


def assert_close_params(a, b):
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("algorithm", "workers"), [("maml", (2, 1)), ("anil", (1,)), ("reptile", (1,))])
def test_same_seed_same_meta_parameters_in_process_and_on_workers(ray_local, sine_config, algorithm, workers):
    """With `runtime.shards` fixed, in-process, 2 workers and 1 worker taking both shards in
    turn end bit for bit alike; with the default (a shard per worker) another worker count
    changes only the summation order. meta_batch_size 5 in 2 shards: an uneven 3 + 2."""
    fixed = {"algorithm.name": algorithm, "runtime.shards": 2}
    inproc = final_params(sine_config(**fixed))
    for n in workers:
        on_workers = final_params(sine_config(num_workers=n, **fixed))
        for k in inproc:
            assert torch.equal(inproc[k], on_workers[k]), (n, k)
    one_shard = final_params(sine_config(**{"algorithm.name": algorithm}))
    assert_close_params(one_shard, inproc)
    assert any(not torch.equal(inproc[k], one_shard[k]) for k in inproc)  # another order, other bits
    assert any(not torch.equal(inproc[k], final_params(sine_config(seed=4, **fixed))[k]) for k in inproc)


def test_any_shard_split_gives_the_same_gradient(ray_local, sine_config):
    """Uneven shards (3 + 2 + 2 tasks), more of them than workers: the same bits as in-process
    on the same shards, and the one-shard step up to the order of the sums."""
    reference = final_params(sine_config(meta_batch_size=7, iterations=3))
    shards = {"meta_batch_size": 7, "iterations": 3, "runtime.shards": 3}
    here = final_params(sine_config(**shards))
    got = final_params(sine_config(num_workers=2, **shards, **{"runtime.resources_per_worker.cpu": 0.5}))
    for k in here:
        assert torch.equal(here[k], got[k]), k
    assert_close_params(reference, got)


def test_resume_with_workers_is_exact(ray_local, sine_config, tmp_path):
    """Half the run on 2 workers, the rest resumed on 1 (the same 2 shards): the bits of
    the whole run in one process."""
    shards = {"runtime.shards": 2}
    whole = final_params(sine_config(iterations=20, **shards))
    final_params(sine_config(num_workers=2, iterations=10, **shards), out_dir=tmp_path)
    resumed = final_params(sine_config(num_workers=1, iterations=20, **shards), out_dir=tmp_path, resume=True)
    for k in whole:
        assert torch.equal(whole[k], resumed[k]), k


def test_user_family_runs_on_workers(ray_local):
    cfg = Config.from_dict({"iterations": 3, "meta_batch_size": 4, "num_workers": 1,
                            "task": {"family": "custom_family:Linear", "points": 3}})
    with MetaLearner(cfg) as learner:
        line = learner.train()
    assert line["iteration"] == 3 and line["post_adaptation"]["loss"] > 0


def test_omniglot_reaches_workers_through_the_object_store(ray_local, omniglot_dir, tmp_path):
    from distmeta.loading import load_config

    cfg = load_config("omniglot-protonet", [
        f"task.data_dir={omniglot_dir}", "iterations=2", "meta_batch_size=2", "num_workers=1",
        "task.n_way=5", "task.q_query=2", "model.channels=8"])
    with MetaLearner(cfg, out_dir=tmp_path) as learner:
        learner.train()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and lines[-1]["workers"] == 1
    # The workers' copy of the dataset gave the episodes this process draws: the first
    # iteration's scores (the same parameters on the same tasks) agree to float rounding.
    # (Later parameters may not: Adam turns rounding-sized gradient entries into full steps.)
    with MetaLearner(dataclasses.replace(cfg, num_workers=0)) as learner:
        here = learner.step()
    for phase in ("pre_adaptation", "post_adaptation"):
        for score, value in here[phase].items():
            assert lines[0][phase][score] == pytest.approx(value, rel=1e-5, abs=1e-7), (phase, score)


def test_more_cpus_than_the_cluster_has_is_an_error(ray_local, sine_config):
    cfg = sine_config(num_workers=2, **{"runtime.resources_per_worker.cpu": 2})
    with pytest.raises(UserError, match=r"^num_workers: 2 workers x runtime.resources_per_worker.cpu "
                                        r"2 need 4 CPUs; the Ray cluster has 2"):
        MetaLearner(cfg)


def test_gpu_share_per_worker():
    assert gpus_per_worker(None, 0, 2) == 0
    assert gpus_per_worker(None, 4, 2) == 1.0
    assert gpus_per_worker(None, 1, 3) == 0.3333
    assert gpus_per_worker(0.5, 8, 2) == 0.5
