"""`distmeta plot RUN... [--out curve.png]`: the pre- and post-adaptation curves of training
runs, from their metrics.jsonl, as window means (a single meta-batch's numbers are noisy)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from distmeta.errors import UserError
from distmeta.fileio import atomic_write


def read_curve(run: str | Path, window: int) -> tuple[str, np.ndarray, dict[str, np.ndarray]]:
    """A run's first score (return, accuracy or loss), the iterations, and the window means
    of its `pre` and `post` adaptation values (a trailing mean over `window` lines)."""
    path = Path(run) / "metrics.jsonl"
    try:
        lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read a run's metrics ({type(exc).__name__}); expected a run directory") from None
    if not lines:
        raise UserError(f"{path}: no iteration yet; plot it once the run has written a line")
    score = next(s for s in ("return", "accuracy", "loss") if s in lines[0]["post_adaptation"])
    iterations = np.array([line["iteration"] for line in lines])
    means = {}
    for phase in ("pre", "post"):
        values = np.array([line[f"{phase}_adaptation"][score] for line in lines], dtype=float)
        sums = np.cumsum(np.insert(values, 0, 0.0))
        starts = np.maximum(np.arange(1, len(values) + 1) - window, 0)
        means[phase] = (sums[1:] - sums[starts]) / (np.arange(1, len(values) + 1) - starts)
    return score, iterations, means


def plot_runs(runs: list[str], out: str, window: int) -> Path:
    """Draw every run's curves into one PNG (one panel per score) at `out`."""
    if window < 1:
        raise UserError(f"--window: got {window}; expected >= 1")
    curves = [(run, *read_curve(run, window)) for run in runs]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("plot: needs matplotlib; pip install 'distmeta[plot]'") from None
    scores = list(dict.fromkeys(score for _, score, _, _ in curves))
    fig, axes = plt.subplots(1, len(scores), figsize=(6 * len(scores), 4), squeeze=False)
    for run, score, iterations, means in curves:
        ax = axes[0][scores.index(score)]
        (line,) = ax.plot(iterations, means["post"], label=f"{Path(run).name} post-adaptation")
        ax.plot(iterations, means["pre"], linestyle="--", color=line.get_color(), label=f"{Path(run).name} pre")
        ax.set_xlabel("iteration")
        ax.set_ylabel(f"{score} (mean of the last {window} iterations)")
    for ax in axes[0]:
        ax.legend(fontsize="small")
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)
    return path
