"""Errors that people, not programmers, are meant to read.

A `UserError` carries one line that says what is wrong, the value received and how to fix it. The command line
prints that line and exits with code 2; anything else escaping to the command line is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user (a file, a flag, a dataset): the message is the whole story."""


class ConfigError(UserError, ValueError):
    """A setting that breaks a rule; raised before any work starts."""
