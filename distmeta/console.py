"""What the CLI shows and hears: its progress lines, Ctrl-C or SIGTERM turned into a stop
after the iteration in progress, its one-line errors and its strict `--json` output."""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import threading
import time
from collections import deque
from typing import Any

from distmeta.errors import UserError


class StopOnSignal:
    """While training: the first Ctrl-C (SIGINT) or SIGTERM (what `kill` and schedulers
    send) lets the current iteration finish and a checkpoint be written before the run
    stops; a second Ctrl-C stops at once (the newest checkpoint is then the scheduled one)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._before: dict = {}
        self._before_unraisable = sys.unraisablehook

    def requested(self) -> bool:
        return self.signum is not None

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():  # signals reach only it
            for sig in self.SIGNALS:
                signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            # Stop at once, but let the workers be closed: more Ctrl-C would break the
            # clean-up into a traceback.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: stopping after this iteration, with a checkpoint "
              "(Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def _unraisable(self, unraisable) -> None:
        # The second Ctrl-C's KeyboardInterrupt can land inside a finalizer (a Ray actor
        # handle's __del__), where Python cannot raise it and prints "Exception ignored" with
        # a traceback instead. The first signal already asked for a stop after the iteration,
        # so that is how the run ends: quietly, as the user asked.
        if unraisable.exc_type is KeyboardInterrupt and self.signum is not None:
            return
        self._before_unraisable(unraisable)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._before = {sig: signal.getsignal(sig) for sig in self.SIGNALS}
        self._before_unraisable = sys.unraisablehook
        sys.unraisablehook = self._unraisable
        self.install()
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._before.items():
            signal.signal(sig, handler)
        sys.unraisablehook = self._before_unraisable


def describe(line: dict) -> str:
    if "return" in line["pre_adaptation"]:
        return (f"return pre-adaptation {line['pre_adaptation']['return']:.3f}, "
                f"post {line['post_adaptation']['return']:.3f}")
    text = f"pre-adaptation loss {line['pre_adaptation']['loss']:.4f}, " \
           f"post {line['post_adaptation']['loss']:.4f}"
    if "accuracy" in line["post_adaptation"]:
        text += f", accuracy pre {line['pre_adaptation']['accuracy']:.3f} " \
                f"post {line['post_adaptation']['accuracy']:.3f}"
    return text


def window_mean(lines) -> dict:
    """The mean of metrics lines' pre- and post-adaptation scores (a line's shape)."""
    return {phase: {k: sum(line[phase][k] for line in lines) / len(lines) for k in lines[-1][phase]}
            for phase in ("pre_adaptation", "post_adaptation")}


class Progress:
    """Training progress on stderr: the run folder and where a resume starts; then, on a
    terminal, a tqdm bar, and in a log a line every `every_s` seconds, each with the steady
    rate (iteration times only, no start-up), the ETA, and the means of the last `window`
    iterations (one meta-batch's numbers are noisy)."""

    def __init__(self, total: int, every_s: float = 30.0, window: int = 50):
        self.total, self.every_s = total, every_s
        self.recent: deque[dict] = deque(maxlen=window)
        self.bar = None

    def start(self, iteration: int, out: str) -> None:
        where = f"resuming at iteration {iteration} of {self.total}" if iteration else f"{self.total} iterations"
        print(f"run directory: {out} ({where})", file=sys.stderr, flush=True)
        self.last_print = time.monotonic()
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=iteration, unit="it", file=sys.stderr, mininterval=0.5,
                            dynamic_ncols=True, leave=True)

    def mean_text(self) -> str:
        return f"mean of the last {len(self.recent)}: {describe(window_mean(self.recent))}"

    def update(self, line: dict) -> None:
        self.recent.append(line)
        if self.bar is not None:
            self.bar.update(line["iteration"] - self.bar.n)
            self.bar.set_postfix_str(self.mean_text(), refresh=False)
            return
        now = time.monotonic()
        if now - self.last_print >= self.every_s or line["iteration"] == self.total:
            self.last_print = now
            rate = len(self.recent) / max(sum(x["time_s"] for x in self.recent), 1e-9)
            eta = (self.total - line["iteration"]) / rate
            print(f"iter {line['iteration']}/{self.total}  {rate:.2f} it/s  ETA {_duration(eta)}  "
                  f"{self.mean_text()}", file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    h, m = divmod(minutes, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class TaskProgress:
    """`on_progress(done, total)` of a long evaluation or adaptation (`unit`s): a tqdm bar
    on a terminal, a line every `every_s` seconds in a log."""

    def __init__(self, what: str, unit: str = "task", plural: str | None = None, every_s: float = 30.0):
        self.what, self.unit, self.plural, self.every_s = what, unit, plural or unit + "s", every_s
        self.bar: Any = None
        self.last_print = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if sys.stderr.isatty():
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit=self.unit, desc=self.what, file=sys.stderr, leave=False)
            self.bar.update(done - self.bar.n)
        elif time.monotonic() - self.last_print >= self.every_s:
            self.last_print = time.monotonic()
            print(f"{self.what}: {done}/{total} {self.plural}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def print_error(exc: BaseException | str) -> None:
    """`error: ...` on one line: a newline in an input shows as \\n, and a long input is cut."""
    text = str(exc).replace("\r", "\\r").replace("\n", "\\n")
    print(f"error: {text if len(text) <= 2000 else text[:2000] + ' ...'}", file=sys.stderr)


def print_json(obj) -> None:
    """`obj` as strict JSON: NaN and infinities (a diverged run's scores) become null, and
    `"non_finite": true` says that some did."""
    found = []

    def finite(value):
        if isinstance(value, float) and not math.isfinite(value):
            found.append(value)
            return None
        if isinstance(value, dict):
            return {k: finite(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [finite(v) for v in value]
        return value

    clean = finite(obj)
    print(json.dumps({**clean, "non_finite": True} if found else clean, allow_nan=False))


def check_paths(args) -> None:
    """An empty path argument is a mistake (an unset shell variable), not the default."""
    for name in ("config", "checkpoint", "out", "save", "support", "predict"):
        value = getattr(args, name, None)
        if isinstance(value, str) and not value.strip():
            raise UserError(f"{name if name in ('config', 'checkpoint') else '--' + name}: got an empty path")


@contextlib.contextmanager
def ignoring_ctrl_c():
    """Ctrl-C ignored inside (in the main thread, where signals arrive)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)
