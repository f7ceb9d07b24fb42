"""The one exception type the command line turns into a clean exit 2.

Raise `UserError` for anything a user can fix: a bad flag, a missing file, a
value out of range. The message is printed as one line, without a traceback,
so it must name the thing that is wrong and say what to do about it.
"""


class UserError(Exception):
    """Bad input or configuration; the CLI prints the message and exits 2."""
