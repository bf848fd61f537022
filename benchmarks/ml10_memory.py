#!/usr/bin/env python3
"""Memory of ML10 envs as their tasks move through the test skills: what an evaluation
worker's envs do at each skill boundary. Needs the metaworld extra.

    python3 benchmarks/ml10_memory.py [--envs 20] [--rounds 2]

`--envs` instances of `distmeta/MetaWorldML10-v0` (test split) are taken through the 5 test
skills `--rounds` times: each instance's task is set to the skill's, then every instance is
reset (an instance keeps the episode's skill env and closes the one before). The process's
RSS is printed after the tasks are set (both skills' envs held) and after the resets, with
the C heap trimmed after each close (as shipped) and without (`_MALLOC_TRIM` off), each in
a fresh process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

SKILLS = 5
TASKS_PER_SKILL = 50


def rss_mb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS"))


def measure(envs: int, rounds: int, trim: bool) -> list[dict]:
    import gymnasium as gym

    import distmeta_envs.metaworld as mw

    if not trim:
        mw._MALLOC_TRIM = None
    instances = [gym.make("distmeta/MetaWorldML10-v0", split="test").unwrapped for _ in range(envs)]
    rows = [{"round": 0, "skill": 0, "set": rss_mb(), "reset": rss_mb()}]
    for r in range(rounds):
        for skill in range(SKILLS):
            if r == 0 and skill == 0:
                continue  # built on skill 0
            for i, env in enumerate(instances):
                env.set_task({"task_index": skill * TASKS_PER_SKILL + i % TASKS_PER_SKILL})
            held = rss_mb()
            for env in instances:
                env.reset(seed=0)
            rows.append({"round": r, "skill": skill, "set": held, "reset": rss_mb()})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=["trim", "no-trim"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.envs, args.rounds, args.child == "trim")))
        return 0
    results = {}
    for mode in ("trim", "no-trim"):
        out = subprocess.run([sys.executable, __file__, "--envs", str(args.envs), "--rounds", str(args.rounds),
                              "--child", mode], check=True, capture_output=True, text=True).stdout
        results[mode] = json.loads(out.strip().splitlines()[-1])
    print(f"{args.envs} ML10 test envs; RSS in MB after the tasks are set / after the resets")
    print("| round | skill | trimmed (as shipped) | not trimmed |\n|---:|---:|---|---|")
    for on, off in zip(results["trim"], results["no-trim"]):
        print(f"| {on['round']} | {on['skill']} | {on['set']} / {on['reset']} | {off['set']} / {off['reset']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
