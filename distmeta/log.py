"""distmeta's messages go to the `distmeta` logger (`logging.getLogger("distmeta")` and its
children): worker losses and replacements, a skipped damaged checkpoint, a search's
leaderboard. Library code never prints; whoever embeds distmeta routes or silences them
with the standard `logging` API. The CLI (and each Tune trial's process) shows them on
stderr, one line each, through `log_to_stderr`."""

from __future__ import annotations

import logging
import sys

LOGGER = "distmeta"


class _OneLine(logging.Formatter):
    """`distmeta: message`, with `warning: ` before warnings and errors."""

    def format(self, record: logging.LogRecord) -> str:
        level = "warning: " if record.levelno >= logging.WARNING else ""
        return f"distmeta: {level}{record.getMessage()}"


class _Stderr(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time (a redirected one too)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def log_to_stderr(level: int = logging.INFO) -> None:
    """Show the `distmeta` logger's messages on stderr (once, however often called)."""
    logger = logging.getLogger(LOGGER)
    logger.setLevel(level)
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(_OneLine())
        logger.addHandler(handler)

