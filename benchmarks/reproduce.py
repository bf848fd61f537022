#!/usr/bin/env python3
"""Reproduce a published number: train a paper's preset, evaluate on the paper's protocol.

    python3 benchmarks/reproduce.py protonet-1shot --minutes 60        # a first part
    python3 benchmarks/reproduce.py protonet-1shot --minutes 60 --resume   # the next one
    python3 benchmarks/reproduce.py protonet-1shot --eval-only          # evaluate it again
    python3 benchmarks/reproduce.py --table                             # BENCHMARKS.md's rows
    python3 benchmarks/reproduce.py --curves                            # their learning curves
    python3 benchmarks/reproduce.py protonet-1shot --root B --against A # an A/B, paired by task
    python3 benchmarks/reproduce.py protonet-5shot --keep benchmarks/records   # a resumable copy

Each row trains one preset in `ROOT/NAME` (default runs/reproduce/NAME) until its
iterations or the `--minutes` of this part, whichever comes first; `--resume` continues
where the last part stopped (the run's own checkpoints, so the result is the one an
uninterrupted run gives). `ROOT/NAME/reproduce.json` accumulates the parts (their wall
time, iterations and learning curve) and, after each part, the evaluation of the newest
checkpoint on every published setting of the row: the paper's count of test tasks (600,
Finn et al.'s; 1000, Snell et al.'s), mean accuracy and its Student-t 95% interval. A row
whose training has not reached the preset's iterations says so: its number is a budgeted
one, never an extrapolation.

`--against A` scores the row's newest checkpoints under `--root` (B) and under A on the
same test tasks and prints, per setting, B - A per task: its mean and Student-t 95%
interval (narrower than the two scores' own intervals when the runs agree on which tasks
are hard, as two runs of a row do; those include which tasks were drawn). It trains
nothing and changes no record.

`--keep DIR` copies what `--resume` needs of the row's run (its record, config and newest
checkpoint; not the metrics lines of finished parts, nor older checkpoints) to DIR/NAME,
replacing an earlier copy, so that a long run outlives its folder (a machine that does not
come back): `cp -r DIR/NAME ROOT/` and `--resume` continue it, bit for bit as the run would
have gone on where torch's CPU kernels are the same (each part records them, `cpu_kernels`:
AVX2 and AVX-512 kernels round differently). It trains nothing.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SNELL = "Snell et al. 2017, Table 1"
FINN = "Finn et al. 2017, Table 1"
CURVE_POINTS = 8


@dataclass(frozen=True)
class Setting:
    """One published number: the evaluation overrides that give its protocol, the score it
    is (`accuracy`; `loss`, regression's mean squared error; `success`, Meta-World's success
    rate) and its paper's count of test tasks (`--eval-tasks` overrides it, unless it is
    `every_task`: the whole held-out set, as Meta-World's)."""

    label: str
    overrides: tuple[str, ...]
    published: str
    source: str
    metric: str = "accuracy"
    tasks: int = 600
    every_task: bool = False

    def task_count(self, asked: int | None) -> int:
        return self.tasks if self.every_task or asked is None else asked


@dataclass(frozen=True)
class Row:
    preset: str
    train: tuple[str, ...] = ()
    settings: tuple[Setting, ...] = field(default_factory=tuple)


def omniglot(way: int, shot: int, queries: int, published: str, source: str, tasks: int = 600) -> Setting:
    return Setting(f"Omniglot {way}-way {shot}-shot",
                   (f"task.n_way={way}", f"task.k_shot={shot}", f"task.q_query={queries}"), published, source,
                   tasks=tasks)


def sinusoid(k: int) -> Setting:
    """Finn et al.'s sinusoid test: K support and K query points per task, 600 tasks, one
    inner step (their code's test; the paper plots the MSE, it gives no number)."""
    return Setting(f"Sinusoid K={k}, MSE after 1 step", (f"task.k_support={k}", f"task.k_query={k}"),
                   "plotted only (Fig. 3), no number", f"{FINN.split(',')[0]}, Fig. 3", "loss")


# ProtoNets: one model per shot, tested 5- and 20-way on 1000 episodes of 15 queries per
# class (Snell's scripts/predict/few_shot/run_eval.py: 1000 test episodes; the query count
# is his training script's data.test_query, 15). MAML: Finn's settings per way (20-way:
# meta-batch 16, inner lr 0.1, 5 steps).
ROWS = {
    "protonet-1shot": Row("omniglot-protonet", (), (
        omniglot(5, 1, 15, "98.8", SNELL, 1000), omniglot(20, 1, 15, "96.0", SNELL, 1000))),
    "protonet-5shot": Row("omniglot-protonet", ("task.k_shot=5",), (
        omniglot(5, 5, 15, "99.7", SNELL, 1000), omniglot(20, 5, 15, "98.9", SNELL, 1000))),
    "maml-5w1s": Row("omniglot-maml", (), (omniglot(5, 1, 1, "98.7 ± 0.4", FINN),)),
    "maml-5w5s": Row("omniglot-maml", ("task.k_shot=5", "task.q_query=5"), (
        omniglot(5, 5, 5, "99.9 ± 0.1", FINN),)),
    "maml-20w1s": Row("omniglot-maml", ("task.n_way=20", "meta_batch_size=16", "algorithm.inner_lr=0.1",
                                        "algorithm.inner_steps=5", "algorithm.eval_inner_steps=5"), (
        omniglot(20, 1, 1, "95.8 ± 0.3", FINN),)),
    "maml-20w5s": Row("omniglot-maml", ("task.n_way=20", "task.k_shot=5", "task.q_query=5", "meta_batch_size=16",
                                        "algorithm.inner_lr=0.1", "algorithm.inner_steps=5",
                                        "algorithm.eval_inner_steps=5"), (
        omniglot(20, 5, 5, "98.9 ± 0.2", FINN),)),
    "fomaml-5w1s": Row("omniglot-fomaml", (), (omniglot(5, 1, 1, "98.3 ± 0.5", FINN),)),
    "metasgd-5w1s": Row("omniglot-metasgd", (), (omniglot(5, 1, 1, "99.53 ± 0.26", "Li et al. 2017, Table 1"),)),
    "reptile-5w1s": Row("omniglot-reptile", (), (
        omniglot(5, 1, 15, "97.68 ± 0.04 (transductive)", "Nichol et al. 2018, Table 1"),)),
    "anil-5w1s": Row("omniglot-anil", (), (
        omniglot(5, 1, 1, "none at 5-way (ANIL's Omniglot results are 20-way)", "Raghu et al. 2020"),)),
    # Meta-World's protocol: every held-out skill and goal of ML10's test split (5 x 50),
    # 10 adaptation episodes, 1 step, 3 episodes of the most likely actions.
    "maml-ml10": Row("ml10-maml", (), (Setting(
        "Meta-World ML10, meta-test success rate", ("task.env_kwargs.split=test", "task.eval_all_tasks=true"),
        "36 (Yu et al. 2019); 13.2 (2025 re-evaluation)", "as issue 13 cites them; not checked here",
        "success", tasks=250, every_task=True),)),
    # Finn's sinusoid runs: 70,000 iterations (their code's README), one model per K.
    "maml-sine-k5": Row("sinusoid-maml", ("iterations=70000", "checkpoint_every=5000", "task.k_support=5",
                                          "task.k_query=5"), (sinusoid(5),)),
    "maml-sine-k10": Row("sinusoid-maml", ("iterations=70000", "checkpoint_every=5000"), (sinusoid(10),)),
}


def load_record(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"parts": [], "results": []}


def training_curve(metrics_path: Path, first: int, last: int, points: int = CURVE_POINTS) -> list:
    """The part's learning curve from the run's metrics.jsonl: iterations first+1..last cut
    into at most `points` equal windows, each `[its last iteration, the window's mean training
    post-adaptation score]` (accuracy where the task has one, else the return, else the
    loss). Single meta-batches are noisy; window means are what a curve can show."""
    scores: list[tuple[int, float]] = []
    for line in metrics_path.read_text().splitlines():
        entry = json.loads(line)
        post = entry.get("post_adaptation") or {}
        key = next((k for k in ("accuracy", "return", "loss") if k in post), None)
        if key is not None and first < entry["iteration"] <= last:
            scores.append((entry["iteration"], post[key]))
    size = max(1, -(-len(scores) // points))
    windows = [scores[i:i + size] for i in range(0, len(scores), size)]
    return [[w[-1][0], sum(v for _, v in w) / len(w)] for w in windows]


def run_part(name: str, args) -> dict:
    """Train one part of row `name` (none with `--eval-only`) and evaluate it; the updated
    record. The part is recorded before the evaluation, so a failed evaluation loses no
    training: `--eval-only` evaluates again."""
    import torch

    from distmeta.fileio import atomic_write
    from distmeta.loading import load_config
    from distmeta.runtime import MetaLearner
    from distmeta.runtime.evaluate import evaluate

    row = ROWS[name]
    out = Path(args.root) / name
    record_path = out / "reproduce.json"
    if args.eval_only and not record_path.is_file():
        raise SystemExit(f"error: --eval-only: {out} holds no trained part; train it first")
    if not args.resume and not args.eval_only and out.exists():
        raise SystemExit(f"error: {out} holds a run already; continue it with --resume")
    record = load_record(record_path)

    def save() -> None:
        atomic_write(record_path, lambda f: f.write(json.dumps(record, indent=1).encode()))

    if not args.eval_only:
        config = load_config(row.preset, [*row.train, *args.overrides])
        start = time.perf_counter()
        with MetaLearner(config, out_dir=out, resume=args.resume) as learner:
            first = learner.iteration
            learner.train(time_budget_s=args.minutes * 60 if args.minutes else None)
            last = learner.iteration
        record["parts"].append({"command": shlex.join(sys.orig_argv), "iterations": [first, last],
                                "train_s": time.perf_counter() - start, "ended": time.strftime("%Y-%m-%d %H:%M"),
                                "cpu_kernels": torch.backends.cpu.get_cpu_capability(),
                                "curve": training_curve(out / "metrics.jsonl", first, last)})
        record["config"] = {"preset": row.preset, "train": list(row.train), "overrides": args.overrides,
                            "iterations": config.iterations}
        record["results"] = []
        save()
    record["results"] = []
    for setting in row.settings:
        scored = evaluate(out, tasks=setting.task_count(args.eval_tasks),
                          overrides=[*setting.overrides, *args.eval_overrides], workers=args.eval_workers)
        score = scored["post_adaptation"][setting.metric]
        record["results"].append({"setting": setting.label, "published": setting.published,
                                  "source": setting.source, "iteration": scored["iteration"],
                                  "tasks": scored["tasks"], "metric": setting.metric,
                                  "mean": score["mean"], "ci95": score["ci95"]})
    save()
    return record


def compare(name: str, args) -> str:
    """The `--against` table: row `name` under args.against (A) and args.root (B), each
    setting scored on the same tasks, and B - A paired by task."""
    from distmeta.runtime.evaluate import evaluate, summarise

    runs = [Path(args.against) / name, Path(args.root) / name]
    for run in runs:
        if not (run / "reproduce.json").is_file():
            raise SystemExit(f"error: --against: {run} holds no trained part of {name}; train it first")
    header = ("| setting | A (iteration) | B (iteration) | B - A, paired: mean ± 95% t (tasks) | "
              "tasks B better / worse / tied |")
    lines = [f"A = {runs[0]}, B = {runs[1]}", header, "|---|---|---|---|---|"]
    for setting in ROWS[name].settings:
        tasks = setting.task_count(args.eval_tasks)
        scored = [evaluate(run, tasks=tasks, overrides=[*setting.overrides, *args.eval_overrides],
                           workers=args.eval_workers, per_task=True) for run in runs]
        a, b = (s["per_task"][f"post_{setting.metric}"] for s in scored)
        shown = {"metric": setting.metric, "tasks": tasks}
        texts = [f"{score_text({**shown, **s['post_adaptation'][setting.metric]})} ({s['iteration']})"
                 for s in scored]
        gap = score_text({**shown, **summarise(b - a)})
        lines.append(f"| {setting.label} | {texts[0]} | {texts[1]} | {gap} | "
                     f"{int((b > a).sum())} / {int((b < a).sum())} / {int((b == a).sum())} |")
    return "\n".join(lines)


def keep(name: str, args) -> Path:
    """Copy the resumable state of row `name`'s run to args.keep/NAME (see `--keep`)."""
    from distmeta.fileio import atomic_write
    from distmeta.runtime.checkpoint import list_checkpoints, load_checkpoint

    run, kept = Path(args.root) / name, Path(args.keep) / name
    found = list_checkpoints(run / "checkpoints")
    if not (run / "reproduce.json").is_file() or not found:
        raise SystemExit(f"error: --keep: {run} holds no trained part of {name}; train it first")
    if kept.resolve() == run.resolve():
        raise SystemExit(f"error: --keep: got the run's own folder {run}; expected another")
    load_checkpoint(found[-1])  # a damaged checkpoint is refused here, not at the resume
    # The checkpoint first, the record last: a copy cut short resumes from the newer
    # checkpoint (its record lacking only that part's entry), never a record claiming
    # iterations that no kept checkpoint holds.
    for source in (found[-1], run / "config.yaml", run / "reproduce.json"):
        data = source.read_bytes()
        atomic_write(kept / source.relative_to(run), lambda f, data=data: f.write(data))
    for old in list_checkpoints(kept / "checkpoints")[:-1]:
        old.unlink()
    return kept


def table(root: Path) -> str:
    """BENCHMARKS.md's reproduction table from every row's record under `root`."""
    header = ("| setting | method (row) | published | source | ours: mean ± 95% t half-width (tasks) | "
              "iterations | compute | command |")
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for name, row in ROWS.items():
        record = load_record(root / name / "reproduce.json")
        hours = sum(p["train_s"] for p in record["parts"]) / 3600
        done = record["parts"][-1]["iterations"][1] if record["parts"] else 0
        total = record.get("config", {}).get("iterations", "?")
        results = {r["setting"]: r for r in record["results"]}
        for setting in row.settings:
            got = results.get(setting.label)
            ours = score_text(got) if got else "not run"
            budget = "" if done == total else " (budgeted: training unfinished)"
            lines.append(f"| {setting.label} | {row.preset} ({name}) | {setting.published} | {setting.source} | "
                         f"{ours}{budget if got else ''} | {done} / {total} | {hours:.2f} h, 2-core CPU | "
                         f"`python3 benchmarks/reproduce.py {name}` |")
    return "\n".join(lines)


def curves(root: Path) -> str:
    """Each trained row's learning curve, part by part: `iteration: training score`."""
    lines = []
    for name in ROWS:
        record = load_record(root / name / "reproduce.json")
        points = [point for part in record["parts"] for point in part.get("curve", [])]
        if points:
            lines.append(f"{name}: " + " · ".join(f"{it}: {score:.3f}" for it, score in points))
    return "\n".join(lines)


def score_text(result: dict) -> str:
    """`98.47 ± 0.24 % (600)` for accuracy, `MSE 0.385 ± 0.028 (600)` for regression,
    `success 4.0 ± 1.9 % (250)` for Meta-World."""
    metric = result.get("metric", "accuracy")
    if metric == "accuracy":
        return f"{100 * result['mean']:.2f} ± {100 * result['ci95']:.2f} % ({result['tasks']})"
    if metric == "success":
        return f"success {100 * result['mean']:.1f} ± {100 * result['ci95']:.1f} % ({result['tasks']})"
    return f"MSE {result['mean']:.3f} ± {result['ci95']:.3f} ({result['tasks']})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", nargs="?", help=f"the row: {', '.join(ROWS)}")
    parser.add_argument("--minutes", type=float, help="training wall time of this part (default: to the end)")
    parser.add_argument("--resume", action="store_true", help="continue the row's run from its newest checkpoint")
    parser.add_argument("--root", default="runs/reproduce", help="where the rows' runs live")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="train-config override (task.data_dir=... for the data)")
    parser.add_argument("--eval-set", dest="eval_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="evaluation override besides the setting's own")
    parser.add_argument("--eval-tasks", type=int,
                        help="test tasks per setting (default: the paper's, 600 or Snell's 1000)")
    parser.add_argument("--eval-only", action="store_true",
                        help="evaluate the row's newest checkpoint again, without training")
    parser.add_argument("--eval-workers", type=int, default=0,
                        help="evaluate on N Ray workers (default 0: in this process)")
    parser.add_argument("--against", metavar="ROOT",
                        help="score the row under ROOT and under --root on the same tasks; print the paired gap")
    parser.add_argument("--keep", metavar="DIR",
                        help="copy the row's record, config and newest checkpoint to DIR/NAME, to resume elsewhere")
    parser.add_argument("--table", action="store_true", help="print the reproduction table of every row")
    parser.add_argument("--curves", action="store_true",
                        help="print each trained row's learning curve (training post-adaptation score)")
    args = parser.parse_args(argv)
    if args.table:
        print(table(Path(args.root)))
    if args.curves:
        print(curves(Path(args.root)))
    if args.table or args.curves:
        return 0
    if args.name not in ROWS:
        print(f"error: NAME: got {args.name!r}; expected one of {', '.join(ROWS)}", file=sys.stderr)
        return 2
    if args.eval_tasks is not None and args.eval_tasks < 1:
        print(f"error: --eval-tasks: got {args.eval_tasks}; expected at least 1", file=sys.stderr)
        return 2
    if args.minutes is not None and not args.minutes > 0:
        print(f"error: --minutes: got {args.minutes}; expected > 0", file=sys.stderr)
        return 2
    from distmeta.errors import UserError

    # --keep and --against act on trained runs; a training flag beside them would be ignored
    for flag, target, action in (("--keep", args.keep, keep), ("--against", args.against, compare)):
        if target is None:
            continue
        ignored = [name for name, given in (("--resume", args.resume), ("--eval-only", args.eval_only),
                                            ("--minutes", args.minutes is not None), ("--set", args.overrides),
                                            ("--against", flag == "--keep" and args.against is not None)) if given]
        if ignored:
            print(f"error: {flag}: acts on a trained run; drop {', '.join(ignored)}", file=sys.stderr)
            return 2
        try:
            print(action(args.name, args))
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    try:
        record = run_part(args.name, args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(record["results"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
