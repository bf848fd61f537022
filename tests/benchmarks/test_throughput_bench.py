"""The throughput, GPU-check and learner-scale scripts: the bare reference and distmeta
compute the same meta-step, the GPU check says in one line when there is no GPU, and the
learner's two reductions give the same bits."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_bare_step_and_distmetas_end_with_the_same_parameters(tmp_path):
    out = tmp_path / "t.json"
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "throughput.py"), "--workloads", "W1",
                           "--variants", "bare,inproc-vmap", "--rounds", "1", "--iters", "2", "--warmup", "1",
                           "--json-out", str(out)], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(out.read_text())["results"]
    rows = {row["variant"]: row for row in result["rows"]}
    assert set(rows) == {"bare", "inproc-vmap"}
    assert rows["inproc-vmap"]["first_post_loss"] == pytest.approx(rows["bare"]["first_post_loss"], rel=1e-5)
    assert rows["inproc-vmap"]["max_abs_param_diff"] < 1e-5  # 3 Adam steps of the same meta-gradient
    assert "| W1 | inproc-vmap |" in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_check_without_a_gpu_is_one_error_line():
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_check.py")], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: no CUDA GPU visible to torch; run this on a GPU machine"


@pytest.mark.cluster
def test_the_learner_scale_benchmark_times_both_reductions_and_they_give_the_same_bits(tmp_path):
    out = tmp_path / "s.json"
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "learner_scale.py"), "--sizes", "100k", "--workers", "9",
                           "--nodes", "1", "--iters", "1", "--rounds", "1", "--store-gb", "0.3",
                           "--head-store-gb", "0.3", "--json-out", str(out)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (point,) = json.loads(out.read_text())["results"]
    assert point["same_bits"] is True and point["workers"] == 9  # two groups: added on the cluster
    assert set(point["variants"]) == {"learner-adds", "cluster-adds"}
    assert all(v["gather"] > 0 for v in point["variants"].values())
    assert "| 100k | 9 | 1 |" in proc.stdout


def test_the_learner_scale_benchmark_rejects_an_unknown_size():
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "learner_scale.py"), "--sizes", "1G"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: --sizes: unknown ['1G']; choose from ['100k', '10M', '100M']"
