"""The sinusoid family with the timing hooks the fault-tolerance tests need.

Nothing here fakes a fault: the tests kill real worker processes (SIGKILL), remove real
raylets, and let a real worker sleep past the shard timeout. The family only makes the
moments observable: each `sample` on a worker announces its process id in `marker_dir`
and takes `delay_s`, so that a kill lands while a shard is running."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from distmeta.tasks.sinusoid import Sinusoid


@dataclass
class Observable(Sinusoid):
    delay_s: float = 0.0
    """Seconds each shard's sampling takes on a worker."""
    marker_dir: str | None = None
    """Where each sampling call writes `started-<pid>-<n>`."""
    stall_s: float = 0.0
    """The first sampling call of the whole run (over all workers) sleeps this long."""
    fail_once: bool = False
    """The first sampling call of the whole run (over all workers) raises ValueError, as a
    bug in a family would; needs `marker_dir`."""
    crash: bool = False
    """Every sampling call on a worker exits its process, as a segfault would."""
    fail_to_start: bool = False
    """Building the model on a worker raises, as a node without the family's data would."""
    driver_pid: int = field(default_factory=os.getpid)

    @property
    def input_shape(self):
        if self.fail_to_start and os.getpid() != self.driver_pid:
            raise FileNotFoundError("/data/sine is missing on this node")
        return super().input_shape

    def sample(self, rngs, split):
        if self.crash:
            os._exit(3)
        if self.marker_dir is not None:
            markers = Path(self.marker_dir)
            count = sum(1 for _ in markers.glob(f"started-{os.getpid()}-*"))
            (markers / f"started-{os.getpid()}-{count}").touch()
            if self.stall_s and _first(markers / "stalled"):
                time.sleep(self.stall_s)
            if self.fail_once and _first(markers / "failed"):
                raise ValueError("sample: a bug in the family")
        time.sleep(self.delay_s)
        return super().sample(rngs, split)


def _first(marker: Path) -> bool:
    """True for the one call (of every process) that creates `marker`."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        return True
    except FileExistsError:
        return False
