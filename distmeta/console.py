"""What the CLI shows and hears while a run goes on: its progress line, and Ctrl-C or
SIGTERM turned into a stop after the iteration in progress."""

from __future__ import annotations

import signal
import sys
import threading
import time


class StopOnSignal:
    """While training: the first Ctrl-C (SIGINT) or SIGTERM (what `kill` and schedulers
    send) lets the current iteration finish and a checkpoint be written before the run
    stops; a second Ctrl-C stops at once (the newest checkpoint is then the scheduled one)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._before: dict = {}

    def requested(self) -> bool:
        return self.signum is not None

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():  # signals reach only it
            for sig in self.SIGNALS:
                signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: stopping after this iteration, with a checkpoint "
              "(Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._before = {sig: signal.getsignal(sig) for sig in self.SIGNALS}
        self.install()
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._before.items():
            signal.signal(sig, handler)


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


class Progress:
    """A live line on a terminal; periodic lines (about 20 a run) in a log."""

    def __init__(self, total: int):
        self.total = total
        self.live = sys.stderr.isatty()
        self.every = max(1, total // 20)

    def start(self, iteration: int) -> None:
        self.first, self.t0 = iteration, time.perf_counter()

    def update(self, line: dict) -> None:
        i = line["iteration"]
        rate = (i - self.first) / max(time.perf_counter() - self.t0, 1e-9)
        text = f"iter {i}/{self.total}  {rate:.2f} it/s  {describe(line)}"
        if self.live:
            print(f"\r{text}\033[K", end="", file=sys.stderr, flush=True)
        elif i % self.every == 0 or i == self.total:
            print(text, file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.live:
            print(file=sys.stderr)
