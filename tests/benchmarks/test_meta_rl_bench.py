"""The meta-RL benchmark script's adaptation-curve command writes its JSON and PNG."""

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
