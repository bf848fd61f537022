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


def log_to_stderr(level: int = logging.INFO) -> None:
    """Show the `distmeta` logger's messages on stderr (once, however often called)."""
    logger = logging.getLogger(LOGGER)
    logger.setLevel(level)
    if not any(getattr(h, "_distmeta", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_OneLine())
        handler._distmeta = True  # type: ignore[attr-defined]
        logger.addHandler(handler)

