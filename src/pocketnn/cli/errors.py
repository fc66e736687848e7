"""The one exception type of the command line: a mistake the user can fix."""


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""
