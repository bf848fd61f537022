"""The worker pool's two transports on real Ray: the direct channel (calls with inline
parameters) and Ray's actor calls (parameters in Ray's store). Faults on either are in
test_faults.py."""

import json
import os
import socket
import subprocess
import sys
import time
from multiprocessing.connection import AuthenticationError, Client
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from helpers import in_process, observable_config, read_jsonl, train

from distmeta.experiment import build_experiment
from distmeta.runtime import MetaLearner, channel, pool, worker
from distmeta.runtime.executors import ship_user_code


@pytest.mark.parametrize("transport", ["channel", "ray"])
def test_a_shard_error_is_the_familys_own_exception_and_the_learner_can_go_on(
        ray_local, tmp_path, monkeypatch, transport):
    if transport == "ray":
        monkeypatch.setattr(pool, "INLINE_PARAMS_BYTES", 0)
    markers = tmp_path / "markers"
    markers.mkdir()
    # The other shard is still running when the error arrives: its reply to the failed
    # iteration must not be taken for the next iteration's.
    config = observable_config(iterations=3, marker_dir=str(markers), fail_once=True, delay_s=0.3)
    reference = train(in_process(observable_config(iterations=3)))
    with MetaLearner(config) as learner:
        with pytest.raises(ValueError, match="a bug in the family") as raised:
            learner.step()
        assert learner.iteration == 0
        if transport == "channel":
            assert "faulty_family.py" in str(raised.value.__cause__)  # the worker's traceback
        learner.train()
        for k, v in reference.items():
            assert torch.equal(learner.meta[k], v), k


def runner_actor():
    """A shard runner as a bare Ray actor (no pool), and the flat initial parameters."""
    experiment = ship_user_code(build_experiment(observable_config()))
    actor = ray.remote(experiment.runner_class).options(num_cpus=0.5).remote(ray.put(experiment), 1)
    meta = torch.cat([v.reshape(-1) for v in experiment.initial_meta_params().values()]).numpy()
    return actor, meta


def test_a_channel_serves_only_the_holder_of_its_key(ray_local):
    actor, meta = runner_actor()
    key = b"k" * 32
    try:
        address = ray.get(actor.__ray_call__.remote(channel.serve, key))
        with pytest.raises(AuthenticationError):
            Client(address, authkey=b"x" * 32)
        direct = channel.Channel(address, key)  # a failed attempt does not lock the learner out
        seq = direct.send("meta_grad", (meta, 0, [0, 1]))
        (grad, n, sums), lost = direct.receive(seq)
        assert (lost, n, grad.shape, sorted(sums)) == (None, 2, meta.shape, ["post_loss", "pre_loss"])
        direct.close()
    finally:
        ray.kill(actor)


def test_a_worker_samples_its_next_shard_while_the_learner_steps(ray_local, tmp_path):
    # Each sample on a worker leaves a marker: N steps on one worker sample N + 1 shards
    # (the first call's own, then one ahead after each reply), not 2N, and give the bits
    # of the run in-process.
    markers = tmp_path / "markers"
    markers.mkdir()
    config = observable_config(iterations=3, workers=1, marker_dir=str(markers))
    reference = train(in_process(observable_config(iterations=3, workers=1)))
    with MetaLearner(config) as learner:
        learner.train()
        pid = learner.executor.whereabouts()[0][1]
        deadline = time.monotonic() + 30
        while len(list(markers.glob(f"started-{pid}-*"))) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # a fifth sample, were there one, would show by now
        assert len(list(markers.glob(f"started-{pid}-*"))) == 4
        for k, v in reference.items():
            assert torch.equal(learner.meta[k], v), k


def test_a_worker_works_ahead_only_after_the_learners_last_queued_call_for_it(ray_local):
    actor, meta = runner_actor()
    key = b"k" * 32

    def prefetched():
        return ray.get(actor.__ray_call__.remote(lambda runner: runner._prefetched and runner._prefetched[0]))

    try:
        direct = channel.Channel(ray.get(actor.__ray_call__.remote(channel.serve, key)), key)
        direct.receive(direct.send("meta_grad", (meta, 0, [0, 1]), idle_after=False))
        time.sleep(0.5)  # time enough to sample ahead, were it asked to
        assert prefetched() is None
        direct.receive(direct.send("meta_grad", (meta, 0, [2, 3]), idle_after=True))
        deadline = time.monotonic() + 30
        while prefetched() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert prefetched() == (1, (0, 1))  # the iteration's first shard, one iteration on
        direct.close()
    finally:
        ray.kill(actor)


def test_a_worker_out_of_reach_of_its_channel_takes_rays_calls(ray_local, tmp_path, monkeypatch):
    def refused(address, authkey):  # a firewall between the nodes: nothing listens there
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed = probe.getsockname()
        return socket.create_connection(closed, timeout=1)

    monkeypatch.setattr(worker, "Channel", refused)
    reference = train(in_process(observable_config(iterations=3, workers=1)))
    params = train(observable_config(iterations=3, workers=1), tmp_path / "run")
    for k, v in reference.items():
        assert torch.equal(params[k], v), k
    started = [e for e in read_jsonl(tmp_path / "run" / "events.jsonl") if e["event"] == "worker_started"]
    assert len(started) == 1
    assert all("direct channel is out of reach (ConnectionRefusedError" in e["detail"] for e in started)


def shard_class():
    """A shard runner of plain numpy (defined here, so Ray ships it by value): a fixed
    gradient per shard index, after `sleep_s`."""

    class Shard:
        def __init__(self, size):
            self.size = size

        def meta_grad(self, meta, index, sleep_s=0.0):
            import time

            import numpy as np

            time.sleep(sleep_s)
            grad = np.random.default_rng(index).standard_normal(self.size, dtype=np.float32)
            return grad, 1 + index, {"post_loss": float(index)}

    return Shard


def test_gradients_in_rays_store_are_added_on_the_cluster_in_the_one_order(ray_local):
    from distmeta.runtime import reduce

    size = 300_000  # 1.2 MB: Ray keeps each gradient in its store
    workers = pool.WorkerPool(shard_class(), (size,), 2, num_cpus=0.5, num_gpus=0, timeout_s=None, max_attempts=2)
    try:
        meta = ray.put(torch.zeros(size).numpy())
        calls = [(meta, i) for i in range(11)]  # groups of shards 0-7 and 8-10
        workers.add_on_cluster = True  # (by default only from 4 MB of parameters on)
        (grad, tasks, sums), reissued = workers.map_sum("meta_grad", calls)
        workers.add_on_cluster = False
        expected = reduce.add_results(workers.map("meta_grad", calls)[0])
    finally:
        workers.close()
    assert reissued == 0 and tasks == expected[1] == sum(range(1, 12)) and sums == expected[2] == {"post_loss": 55.0}
    assert np.array_equal(grad, expected[0])
    # The grouping is real: a plain left-to-right sum of the 11 gradients has other bits.
    plain = reduce.add_in_order([np.random.default_rng(i).standard_normal(size, dtype=np.float32) for i in range(11)])
    assert not np.array_equal(grad, plain)


# Runs in its own process: this one's Ray is the shared local one.
LOST_GRADIENT = """
import json, sys, threading
import numpy as np, ray
from ray.cluster_utils import Cluster
from distmeta.runtime import pool, reduce
from test_pool import shard_class

cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 0, "include_dashboard": False})
nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
ray.init(address=cluster.address, logging_level="ERROR")
events = []
try:
    size = 300_000
    workers = pool.WorkerPool(shard_class(), (size,), 2, num_cpus=1, num_gpus=0, timeout_s=None,
                              max_attempts=3, on_event=events.append)
    workers.add_on_cluster = True
    meta = ray.put(np.zeros(size, dtype=np.float32))
    calls = [(meta, i, 8.0 if i == 1 else 0.0) for i in range(9)]  # more than one group
    reference = reduce.add_results(workers.map("meta_grad", [c[:2] for c in calls])[0])
    while workers.alive < 2:  # both started: shard i goes to worker i mod 2 first
        workers.map("meta_grad", [(meta, 0)])
    # Worker 0 computes every shard but shard 1 (its own, then the queued ones while
    # worker 1 is busy), its gradients staying in its node's store; its node goes away
    # while shard 1 still runs, before anything is added.
    fast_node = next(n for n in nodes if n.node_id == workers.whereabouts()[0][0])
    removed = threading.Event()
    remover = threading.Timer(2.0, lambda: (cluster.remove_node(fast_node), removed.set()))
    remover.start()
    (grad, tasks, sums), reissued = workers.map_sum("meta_grad", calls, "iteration 1")
    assert removed.is_set(), "the node was still there when the gradients were added"
    workers.close()
finally:
    ray.shutdown()
    cluster.shutdown()
print(json.dumps({"equal": bool(np.array_equal(grad, reference[0])), "counts": [tasks == reference[1], sums == reference[2]],
                  "reissued": reissued, "lost": [e["detail"] for e in events if e["event"] == "gradient_lost"]}))
"""


@pytest.mark.cluster
def test_gradients_lost_with_their_node_before_their_group_was_added_cost_a_rerun_of_their_shards():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), str(Path(__file__).parents[1])]))
    done = subprocess.run([sys.executable, "-c", LOST_GRADIENT], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["equal"] and result["counts"] == [True, True]
    assert result["lost"] == [f"shard {i} of iteration 1: the node holding its gradient is gone; re-run"
                              for i in (0, 2, 3, 4, 5, 6, 7, 8)]
    assert result["reissued"] >= 8
