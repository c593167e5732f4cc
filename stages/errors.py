"""Errors caused by the user's input (parameters, files, data): shown as a message, not a traceback."""


class UserError(Exception):
    """Base class of errors the user can fix; the CLI prints the message and exits with code 2."""
