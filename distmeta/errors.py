"""The exceptions users see. The CLI prints each as a single `error:` line: exit 2 for
`UserError` (bad input, reported before any work where the input allows), exit 1 for
`RunError` (a run that started with good input could not go on)."""


class UserError(Exception):
    """Bad input from the user: a config field, a path, a checkpoint, an address.

    The message is one line that names the field or input at fault, what was received,
    what was expected and, where there is one, the fix.
    """


class ConfigError(UserError):
    """A config value that fails validation; raised before any Ray work starts."""


class RunError(Exception):
    """The run could not go on although its input passed every check. The last
    checkpoint is intact: fix the cause (the message names it) and `--resume`."""


class DivergedError(RunError):
    """Training produced a non-finite meta-gradient (exit 1). Nothing from the failed
    iteration is kept: the last checkpoint holds the last finite parameters (`distmeta eval`
    reads it); start again with smaller learning rates or `algorithm.grad_clip`."""


# Past these a command would run for days without saying why: an adaptation of more inner
# steps is no longer few-shot, and a million held-out tasks already gives an interval
# a thousand times narrower than the papers' 600.
MAX_STEPS = 10_000
MAX_TASKS = 1_000_000
MAX_EPISODES = 100_000


def check_count(flag: str, value: int, low: int, high: int) -> None:
    """A count from the command line within [low, high], or one line naming the flag."""
    if value < low:
        raise UserError(f"{flag}: got {value}; expected >= {low}")
    if value > high:
        raise UserError(f"{flag}: got {value}; expected at most {high}")
