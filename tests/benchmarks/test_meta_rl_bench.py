"""The meta-RL benchmark script: the adaptation-curve command writes its JSON and PNG; the
worker command times meta-gradients and sampling alone."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from distmeta.runtime.evaluate import evaluate

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "meta_rl.py"


def test_curve_command_writes_json_and_png(nav2d_run, tmp_path):
    out, png = tmp_path / "curve.json", tmp_path / "curve.png"
    proc = subprocess.run([sys.executable, str(SCRIPT), "curve", str(nav2d_run), "--tasks", "3",
                           "--steps", "2", "--episodes", "2", "--json-out", str(out), "--plot", str(png)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert set(result["curves"]) == {"MAML-RL", "random init"}
    assert all(len(points) == 3 for points in result["curves"].values())
    # The curve's MAML-RL points are `distmeta eval`'s numbers on the same held-out tasks.
    for steps in (0, 2):
        scores = evaluate(nav2d_run, tasks=3, steps=steps, overrides=["rl.episodes_per_task=2"])
        assert result["curves"]["MAML-RL"][steps]["mean"] == pytest.approx(
            scores["post_adaptation"]["return"]["mean"], rel=1e-9)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_worker_command_times_the_meta_gradient_and_sampling_alone(tmp_path):
    out = tmp_path / "worker.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "worker", "nav2d-maml", "--sampling", "--tasks", "2",
                           "--rounds", "1", "--set", "task.horizon=10", "--set", "rl.episodes_per_task=2",
                           "--compare", "task.vectorized=true", "task.vectorized=false", "--json-out", str(out)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    rows = {"task.vectorized=true", "task.vectorized=false"}
    assert set(result["median_env_steps_per_s"]) == rows | {f"{r}: sampling only" for r in rows}
    assert all(rate > 0 for rate in result["median_env_steps_per_s"].values())
    # 2 tasks x 2 episodes x 10 steps, sampled before and after the inner step.
    assert result["env_steps_per_call"] == {r: 80.0 for r in rows}
    assert result["same_gradient_across_variants"] is True
