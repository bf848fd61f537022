"""The exceptions users see. The CLI prints each as a single `error:` line: exit 2 for
`UserError` (bad input), exit 1 for `RunError` (the run could not go on)."""


class UserError(Exception):
    """Bad input from the user: a config field, a path, a checkpoint, an address.

    The message is one line that names the field or input at fault, what was received,
    what was expected and, where there is one, the fix.
    """


class ConfigError(UserError):
    """A config value that fails validation; raised before any Ray work starts."""


class RunError(Exception):
    """The run could not go on although its input was fine (workers lost beyond the
    allowed attempts). The last checkpoint is intact: fix the cause and `--resume`."""
