"""benchmarks/reproduce.py: a row trained in parts, evaluated on its published settings."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "reproduce.py"


def reproduce(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=300, check=False)


def test_a_row_trains_in_parts_and_scores_every_published_setting(tmp_path, omniglot_dir):
    small = ["--set", f"task.data_dir={omniglot_dir}", "--set", "model.channels=8", "--set", "task.n_way=10",
             "--eval-tasks", "4", "--root", tmp_path]
    first = reproduce("protonet-1shot", "--set", "iterations=2", *small)
    assert first.returncode == 0, first.stderr[-2000:]
    again = reproduce("protonet-1shot", "--set", "iterations=2", *small)
    assert again.returncode == 1 and "holds a run already; continue it with --resume" in again.stderr
    second = reproduce("protonet-1shot", "--set", "iterations=3", "--resume", *small)
    assert second.returncode == 0, second.stderr[-2000:]
    record = json.loads((tmp_path / "protonet-1shot" / "reproduce.json").read_text())
    assert [p["iterations"] for p in record["parts"]] == [[0, 2], [2, 3]]
    assert [(r["setting"], r["iteration"], r["tasks"]) for r in record["results"]] == [
        ("Omniglot 5-way 1-shot", 3, 4), ("Omniglot 20-way 1-shot", 3, 4)]
    for result in record["results"]:  # k correct of 4 tasks x N ways x 15 queries
        ways = 5 if "5-way" in result["setting"] else 20
        correct = result["mean"] * 60 * ways
        assert correct == pytest.approx(round(correct), abs=1e-3)
        assert result["ci95"] > 0
    table = reproduce("--table", "--root", tmp_path).stdout
    assert "| Omniglot 20-way 1-shot | omniglot-protonet (protonet-1shot) | 96.0 | Snell et al. 2017" in table
    assert "| 3 / 3 |" in table and "not run" in table  # the other rows


def test_an_unknown_row_is_one_error_line():
    proc = reproduce("protonets")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: NAME: got 'protonets'; expected one of protonet-1shot, ")
