"""Errors meant for the user: the CLI prints them as one line, never as a traceback."""


class UserError(Exception):
    """A problem with the user's input (file, option, data) described in one readable line."""


class ImageReadError(UserError):
    """An image or mask file that cannot be used; the message names the file and the problem."""
