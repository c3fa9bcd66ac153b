"""The one error type that the command line turns into a one-line message and exit code 2."""


class UsageError(Exception):
    """Bad input from the user: printed as one line on stderr, exit code 2, no traceback."""

    exit_code = 2
