"""What `distmeta tune --resume` trusts: Tune's restore unpickles the search folder's state
(`tuner.pkl`, the searcher's state, the trials' pickled configs), so a crafted folder runs
code. While a search runs, distmeta records the sha256 of every file of Tune's state in
`DIR/.distmeta-tune-state.json`; a resume restores only a folder whose files are those
recorded. A search killed between Tune writing a file and distmeta recording it (a window
of one controller step) is refused too: start it again."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ray import tune

from distmeta.errors import UserError
from distmeta.fileio import atomic_write

RECORD = ".distmeta-tune-state.json"
# distmeta's own files of a search folder: read as data (YAML, JSON, weights-only torch).
OURS = {RECORD, ".lock", "search.yaml", "results.json", "best_config.yaml", "best_checkpoint.pt"}


def _state_files(out: Path) -> list[Path]:
    """Tune's files: the folder's own, and each trial folder's pickles."""
    top = [p for p in out.iterdir() if p.is_file() and p.name not in OURS]
    return sorted(top + list(out.glob("*/*.pkl")))


def _signature(out: Path) -> tuple:
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in _state_files(out))


def _digests(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in _state_files(out)}


def record(out: Path) -> None:
    """Write the record of Tune's files as they are now."""
    text = json.dumps(_digests(out), indent=1, sort_keys=True).encode()
    atomic_write(out / RECORD, lambda f: f.write(text))


class RecordState(tune.Callback):
    """Keeps the record current: after each step of Tune's controller in which a state file
    changed (its size or time), and at the end. The folder is the trials' (pickled with
    the search, the callback must not hold a path: the folder may have moved)."""

    def __init__(self) -> None:
        self.seen: tuple = ()

    def on_step_end(self, iteration, trials, **info):
        if trials:
            out = Path(trials[0].storage.experiment_fs_path)
            signature = _signature(out)
            if signature != self.seen:
                record(out)
                self.seen = signature

    def on_experiment_end(self, trials, **info):
        if trials:
            record(Path(trials[0].storage.experiment_fs_path))


def check(out: Path) -> None:
    """Before Tune restores `out`: every state file is one distmeta recorded, unchanged."""
    fix = "Tune's restore unpickles it, so distmeta resumes only a search folder it wrote; start the search again"
    try:
        recorded = json.loads((out / RECORD).read_text())
    except (OSError, ValueError):
        raise UserError(f"--resume: {out} has no readable {RECORD} (distmeta's record of the search's "
                        f"state); {fix}") from None
    for name, digest in _digests(out).items():
        if recorded.get(name) != digest:
            what = "is not in" if name not in recorded else "differs from"
            raise UserError(f"--resume: {out / name} {what} distmeta's record of this search; {fix}")
