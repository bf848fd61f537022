"""The ML10 memory benchmark: a row per skill boundary, trimmed and untrimmed, each from
its own process."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ml10_memory.py"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_prints_rss_at_every_skill_both_ways():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--envs", "2", "--rounds", "1"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if re.match(r"^\| 0 \| \d \|", line)]
    assert [row.split("|")[2].strip() for row in rows] == ["0", "1", "2", "3", "4"]
    for row in rows:  # "set / reset" MB, both ways, a plausible process size
        sizes = [int(mb) for pair in re.findall(r"(\d+) / (\d+)", row) for mb in pair]
        assert len(sizes) == 4 and all(50 < mb < 5000 for mb in sizes)
