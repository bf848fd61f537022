#!/usr/bin/env python3
"""`model.batch_norm: population` from episodes of the run's training shape (what Snell
et al.'s running averages saw: 60-way batches) against episodes of the tested shape (what
distmeta took before 2026-12-03, night): one checkpoint, the same test tasks, paired by
task. Each ProtoNets row's settings (5- and 20-way, 15 queries per class).

    python3 benchmarks/bn_statistics.py benchmarks/records/protonet-1shot \\
        --set task.data_dir=../shared/data/omniglot --tasks 1000
"""

from __future__ import annotations

import argparse
import dataclasses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run folder or checkpoint with model.batch_norm: population")
    parser.add_argument("--tasks", type=int, default=1000, help="test tasks per setting (default: Snell's 1000)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="evaluation overrides, e.g. task.data_dir=...")
    args = parser.parse_args()

    import torch

    from distmeta.runners import FlatLayout
    from distmeta.runtime.evaluate import load_run, summarise
    from distmeta.runtime.executors import InProcess, evaluate_tasks

    torch.set_num_threads(1)
    print("| test setting | statistics of tested-shape episodes | of training-shape episodes | "
          "training - tested, paired: mean ± 95% t | tasks better / worse / tied |")
    print("|---|---|---|---|---|")
    for way in (5, 20):
        _, state, experiment = load_run(args.run, [*args.overrides, f"task.n_way={way}", "task.q_query=15",
                                                   "model.batch_norm=population"])
        meta = FlatLayout(state["meta_params"]).flatten(state["meta_params"]).numpy()
        scores = []
        for variant in (dataclasses.replace(experiment, trained_shape=None), experiment):
            executor = InProcess(variant.make_runner())
            try:
                scores.append(evaluate_tasks(executor, meta, "test", args.tasks, variant.config.shard_size,
                                             variant.config.algorithm.steps_for_eval, seed=0)["post_accuracy"])
            finally:
                executor.close()
        tested, trained = scores
        texts = [f"{100 * s['mean']:.2f} ± {100 * s['ci95']:.2f}" for s in map(summarise, (tested, trained, trained - tested))]
        print(f"| {way}-way {experiment.family.episode_shape['k_shot']}-shot, iteration {state['iteration']}, "
              f"{args.tasks} tasks | {texts[0]} | {texts[1]} | {texts[2]} | "
              f"{int((trained > tested).sum())} / {int((trained < tested).sum())} / {int((trained == tested).sum())} |",
              flush=True)


if __name__ == "__main__":
    main()
