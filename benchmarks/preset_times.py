#!/usr/bin/env python3
"""Each preset's steady rate on this machine, as shipped (its workers, its threads), and the
wall time its `iterations` take at that rate: the figure each preset's header gives.

    python3 benchmarks/preset_times.py [--presets a,b] [--seconds 60] [--data DIR]

Per preset: a `MetaLearner` of the preset (Omniglot from --data), two iterations to start
the workers and warm up, then iterations for about --seconds (at least 2) timed one by one;
the rate is iterations over their summed time. Start-up (Ray, workers, data) is reported
apart: it is paid once per run. Nothing else should run beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data" / "omniglot").resolve()


def hours(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def measure(name: str, seconds: float, data: Path) -> dict:
    from distmeta import MetaLearner
    from distmeta.loading import load_config

    overrides = [f"task.data_dir={data}"] if name.startswith("omniglot") else []
    config = load_config(name, overrides)
    start = time.perf_counter()
    with MetaLearner(config) as learner:
        for _ in range(2):
            learner.step()
        startup = time.perf_counter() - start
        times: list[float] = []
        while sum(times) < seconds or len(times) < 2:
            t0 = time.perf_counter()
            learner.step()
            times.append(time.perf_counter() - t0)
    rate = len(times) / sum(times)
    return {"preset": name, "iterations": config.iterations, "workers": config.num_workers,
            "timed": len(times), "rate": rate, "startup_s": startup, "total_s": config.iterations / rate}


def main() -> int:
    from distmeta.loading import presets

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default=",".join(presets()))
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--json-out")
    args = parser.parse_args()
    names = args.presets.split(",")
    unknown = sorted(set(names) - set(presets()))
    if unknown:
        print(f"error: --presets: unknown {unknown}; choose from {sorted(presets())}", file=sys.stderr)
        return 1
    rows = []
    print("| preset | iterations | workers | timed iterations | it/s | start-up | wall time of `iterations` |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        row = measure(name, args.seconds, Path(args.data))
        rows.append(row)
        print(f"| {name} | {row['iterations']} | {row['workers']} | {row['timed']} | {row['rate']:.3g} | "
              f"{row['startup_s']:.0f} s | {hours(row['total_s'])} |", flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
