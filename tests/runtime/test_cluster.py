"""A real multi-raylet Ray cluster (`ray.cluster_utils.Cluster`) under `distmeta train`:
a node removed mid-training costs no iteration, a run with no node left waits, a node that
joins gets a missing worker, and the run ends with the bits of a fault-free run."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import DISTMETA, in_process, observable_config, read_jsonl, train
from ray.cluster_utils import Cluster

from distmeta.runtime.checkpoint import list_checkpoints, load_checkpoint

pytestmark = pytest.mark.cluster

TESTS = Path(__file__).resolve().parents[1]


def wait_for(predicate, what, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"distmeta train exited {proc.returncode} waiting for {what}:\n"
                                 f"{proc.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def iterations_done(out):
    path = out / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def launch(cluster, config, tmp_path):
    """`distmeta train --address` of `config` on the cluster, as a user runs it (the driver
    joins the running cluster instead of starting a Ray): (process, run dir)."""
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config.to_dict()))
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.Popen([DISTMETA, "train", str(config_file), "--address", cluster.address, "--out", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, out


@pytest.fixture()
def cluster():
    """A head with no CPUs (the driver's node) and two 1-CPU worker nodes."""
    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        yield cluster, [cluster.add_node(num_cpus=1) for _ in range(2)]
    finally:
        cluster.shutdown()


def test_lost_nodes_cost_no_iteration_a_run_without_nodes_waits_and_joining_nodes_get_workers(
        ray_local, cluster, tmp_path):
    """Two workers on two nodes; one node is removed (the run goes on with one worker), then
    the other (no worker and no room for one: the run waits), then two nodes join and each
    gets a worker. Every iteration is done once and the run ends with a fault-free run's bits."""
    cluster, (first, second) = cluster
    runtime = {"resources_per_worker": {"cpu": 1}}
    config = observable_config(iterations=24, workers=2, runtime=runtime, delay_s=0.25)
    reference = train(in_process(observable_config(iterations=24, workers=2, runtime=runtime)))
    proc, out = launch(cluster, config, tmp_path)
    try:
        wait_for(lambda: iterations_done(out) >= 3, "3 iterations", proc)
        cluster.remove_node(second)  # its raylet and its worker die with it
        one_node_from = iterations_done(out)
        wait_for(lambda: iterations_done(out) >= one_node_from + 4, "4 iterations on one node", proc)
        cluster.remove_node(first)
        time.sleep(1)  # a line already on its way is written
        stalled_at = iterations_done(out)
        time.sleep(3)
        assert iterations_done(out) == stalled_at < 24 and proc.poll() is None
        third = cluster.add_node(num_cpus=1)
        wait_for(lambda: iterations_done(out) >= stalled_at + 2, "2 iterations on the third node", proc)
        fourth = cluster.add_node(num_cpus=1)
        _, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr

    lines = read_jsonl(out / "metrics.jsonl")
    assert [line["iteration"] for line in lines] == list(range(1, 25))
    assert sum(line["shards_reissued"] for line in lines) >= 2
    assert all(line["workers"] == 1 for line in lines[one_node_from + 1:stalled_at])
    assert lines[-1]["workers"] == 2
    events = read_jsonl(out / "events.jsonl")
    # A replacement still waiting for room when its node goes is lost too, with no node.
    lost = [e["node"] for e in events if e["event"] == "worker_lost" and e["node"]]
    replaced = [e["node"] for e in events if e["event"] == "worker_replaced"]
    assert lost == [second.node_id, first.node_id], json.dumps(events)
    assert replaced == [third.node_id, fourth.node_id], json.dumps(events)
    lost_worker = next(e["worker"] for e in events if e["event"] == "worker_lost")
    assert f"worker {lost_worker} (node {second.node_id[:8]}" in stderr

    final = load_checkpoint(list_checkpoints(out / "checkpoints")[-1])
    assert final["iteration"] == 24
    for k in reference:
        assert torch.equal(final["meta_params"][k], reference[k]), k
