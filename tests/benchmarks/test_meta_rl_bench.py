"""The meta-RL benchmark script's adaptation-curve command writes its JSON and PNG."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "meta_rl.py"


def test_curve_command_writes_json_and_png(nav2d_run, tmp_path):
    out, png = tmp_path / "curve.json", tmp_path / "curve.png"
    proc = subprocess.run([sys.executable, str(SCRIPT), "curve", str(nav2d_run), "--tasks", "3",
                           "--steps", "2", "--episodes", "2", "--json-out", str(out), "--plot", str(png)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert set(result["curves"]) == {"MAML-RL", "random init"}
    for points in result["curves"].values():
        assert len(points) == 3 and all(p["mean"] < 0 for p in points)  # Nav2D rewards are -distance
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
