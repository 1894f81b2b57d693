"""Errors meant for the user: the CLI prints them as one line, never as a traceback."""


class UserError(Exception):
    """A problem with the user's input (file, option, data) described in one readable line that names the value,
    not a command-line flag; ``option``, when given, is the parameter at fault, whose flag the CLI adds."""

    def __init__(self, message: str = "", option: str | None = None):
        super().__init__(message)
        self.option = option


class ImageReadError(UserError):
    """An image or mask file that cannot be used; the message names the file and the problem."""
