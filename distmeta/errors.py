"""The one exception type users see. The CLI prints it as a single `error:` line, exit 2."""


class UserError(Exception):
    """Bad input from the user: a config field, a path, a checkpoint, an address.

    The message is one line that names the field or input at fault, what was received,
    what was expected and, where there is one, the fix.
    """


class ConfigError(UserError):
    """A config value that fails validation; raised before any Ray work starts."""
