"""How long the `distmeta` command takes to answer what needs neither torch nor Ray: `--help`,
`presets` and a config error (the target: under 1 second each).

    python3 benchmarks/startup.py --rounds 10 [--before /path/to/an/older/checkout]

Each command runs as `python3 -m distmeta.cli ...` with this checkout (and, with
`--before`, the other checkout) first on PYTHONPATH. Each round runs every (checkout,
command) once, in turn, so load from other jobs hits all alike; the table gives each one's
median and worst wall time over the rounds, and `import torch` alone for scale."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
COMMANDS = {
    "--help": ["--help"],
    "presets": ["presets"],
    "train sinusoid-maml --set algorithm.bogus=1": ["train", "sinusoid-maml", "--set", "algorithm.bogus=1"],
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--before", help="another checkout of distmeta to time the same way")
    args = parser.parse_args(argv)
    checkouts = {"this checkout": HERE, **({"before": Path(args.before).resolve()} if args.before else {})}
    runs = {}
    for label, root in checkouts.items():
        env = dict(os.environ, PYTHONPATH=f"{root}{os.pathsep}{root / 'envs'}")
        for name, cmd in COMMANDS.items():
            runs[(label, f"distmeta {name}")] = ([sys.executable, "-m", "distmeta.cli", *cmd], env)
    runs[("-", "python3 -c 'import torch' (for scale)")] = ([sys.executable, "-c", "import torch"], None)
    times: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
    # An empty working directory: `python3 -m` puts it first on sys.path, before PYTHONPATH.
    with tempfile.TemporaryDirectory() as empty:
        for _ in range(args.rounds):
            for key, (cmd, env) in runs.items():
                start = time.perf_counter()
                done = subprocess.run(cmd, capture_output=True, check=False, env=env, cwd=empty, text=True)
                times[key].append(time.perf_counter() - start)
                if "Traceback" in done.stderr:
                    raise SystemExit(f"error: {' '.join(cmd)} failed:\n{done.stderr}")
    print("| checkout | command | median s | worst s | rounds |\n|---|---|---|---|---|")
    for (label, name), values in times.items():
        print(f"| {label} | `{name}` | {statistics.median(values):.2f} | {max(values):.2f} | {len(values)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
