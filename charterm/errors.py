"""Errors the front-ends turn into one line on stderr (no traceback)."""


class CharTermError(Exception):
    """A runtime failure the user can fix (exit status 1)."""

    exit_code = 1


class UsageError(CharTermError):
    """A bad argument or option value (exit status 2)."""

    exit_code = 2
