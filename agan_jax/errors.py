"""The one exception type for bad user input."""


class UserError(ValueError):
    """Bad user input: the message names the problem and the fix.

    Launchers catch it, print the message (no traceback) and exit with status 2.
    """
