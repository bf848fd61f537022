"""A real multi-raylet Ray cluster (`ray.cluster_utils.Cluster`) under `distmeta train`:
a node removed mid-training costs no iteration, a node that joins gets the missing worker,
and the run ends with the bits of a fault-free run."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import DISTMETA, observable_config, read_jsonl, train
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


def test_a_removed_node_costs_no_iteration_and_a_joining_node_gets_its_worker(ray_local, cluster, tmp_path):
    cluster, nodes = cluster
    config = observable_config(iterations=30, workers=2, runtime={"resources_per_worker": {"cpu": 1}},
                               delay_s=0.25)
    reference = train(observable_config(iterations=30, workers=2, runtime={"resources_per_worker": {"cpu": 1}}))
    proc, out = launch(cluster, config, tmp_path)
    try:
        wait_for(lambda: iterations_done(out) >= 3, "3 iterations", proc)
        cluster.remove_node(nodes[1])  # its raylet and its worker die with it
        removed_at = iterations_done(out)
        wait_for(lambda: iterations_done(out) >= removed_at + 5, "5 iterations on one node", proc)
        joined = cluster.add_node(num_cpus=1)
        joined_at = iterations_done(out)
        _, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr

    lines = read_jsonl(out / "metrics.jsonl")
    assert [line["iteration"] for line in lines] == list(range(1, 31))
    assert sum(line["shards_reissued"] for line in lines) >= 1
    assert all(line["workers"] == 1 for line in lines[removed_at + 1:joined_at])
    assert lines[-1]["workers"] == 2
    events = read_jsonl(out / "events.jsonl")
    lost = [e for e in events if e["event"] == "worker_lost"]
    replaced = [e for e in events if e["event"] == "worker_replaced"]
    assert len(lost) == 1 and lost[0]["node"] == nodes[1].node_id
    assert len(replaced) == 1 and replaced[0]["node"] == joined.node_id, json.dumps(events)
    assert f"worker {lost[0]['worker']} (node {nodes[1].node_id[:8]}" in stderr

    final = load_checkpoint(list_checkpoints(out / "checkpoints")[-1])
    assert final["iteration"] == 30
    for k in reference:
        assert torch.equal(final["meta_params"][k], reference[k]), k


def test_a_run_that_loses_its_only_node_waits_for_a_new_one(ray_local, cluster, tmp_path):
    cluster, nodes = cluster
    cluster.remove_node(nodes[1])
    runtime = {"resources_per_worker": {"cpu": 1}}
    config = observable_config(iterations=12, workers=1, runtime=runtime, delay_s=0.25)
    reference = train(observable_config(iterations=12, workers=1, runtime=runtime))
    proc, out = launch(cluster, config, tmp_path)
    try:
        wait_for(lambda: iterations_done(out) >= 3, "3 iterations", proc)
        cluster.remove_node(nodes[0])  # no worker and no room for one
        time.sleep(1)  # a line already on its way is written
        stalled_at = iterations_done(out)
        time.sleep(3)
        assert iterations_done(out) == stalled_at < 12 and proc.poll() is None
        joined = cluster.add_node(num_cpus=1)
        _, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert [line["iteration"] for line in read_jsonl(out / "metrics.jsonl")] == list(range(1, 13))
    events = read_jsonl(out / "events.jsonl")
    assert [e["event"] for e in events] == ["worker_started", "worker_lost", "worker_replaced"]
    assert events[1]["node"] == nodes[0].node_id and events[2]["node"] == joined.node_id
    final = load_checkpoint(list_checkpoints(out / "checkpoints")[-1])
    for k in reference:
        assert torch.equal(final["meta_params"][k], reference[k]), k
