"""The input-size rules, in one place for the command line, the data layer and the engine (no torch import, so the
command line can use them while it builds its options)."""
from __future__ import annotations

from .errors import UserError

#: square input size of a model whose training size is unknown (a built-in or a checkpoint without one)
DEFAULT_IMAGE_SIZE = 512
#: input sides are multiples of the coarsest feature stride; native-resolution inputs are padded to one
INPUT_MULTIPLE = 32


def check_image_size(size: int, name: str = "image size") -> int:
    """``size`` when it is a positive multiple of :data:`INPUT_MULTIPLE`, else a :class:`UserError` about ``name``
    (the command line passes its flag)."""
    if size < INPUT_MULTIPLE or size % INPUT_MULTIPLE:
        raise UserError(f"{name} must be a positive multiple of {INPUT_MULTIPLE}, got {size}")
    return int(size)
