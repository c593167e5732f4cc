"""Errors caused by the user's input (parameters, files, data): shown as a message, not a traceback.

The CLI catches :class:`UserError` (and only it): its message is printed and the command exits with
code 2. Any other exception is a bug and keeps its traceback. The subclasses also derive from the
matching built-in exception, so ``except ValueError`` / ``except FileNotFoundError`` still catch them.
"""


class UserError(Exception):
    """Base class of errors the user can fix; the CLI prints the message and exits with code 2."""


class InputError(UserError, ValueError):
    """A value given by the user (a parameter, a file's content, an argument) cannot be used."""


class MissingInputError(UserError, FileNotFoundError):
    """A file or folder the command needs does not exist (often: an earlier stage has not run)."""
