"""The throughput and GPU-check scripts: the bare reference and distmeta compute the same
meta-step, and the GPU check says in one line when there is no GPU."""

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
