"""Parsing of text inputs that several predictors accept in the same form."""

from __future__ import annotations

import math
import os

from PIL import Image

from predictors.common import media
from predictors.common.errors import InputError, excerpt


def parse_blend_weights(text: str, count: int, name: str = "style_weights") -> list[float]:
    """``"1,0.5"`` -> [1.0, 0.5] for ``count`` images; empty means equal weights.

    Raises InputError with a sentence that shows the expected form.
    """
    if not text.strip():
        return [1.0] * count
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise InputError(
            f"{name} must be comma-separated numbers such as '1,0.5', got {excerpt(text)}."
        ) from None
    if len(values) != count:
        raise InputError(f"{name} has {len(values)} value(s) but {count} style image(s) were given.")
    if any(not math.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
        raise InputError(f"{name} must be non-negative and not all zero, got {excerpt(text)}.")
    return values


def load_named_images(**paths: str | os.PathLike[str] | None) -> list[Image.Image]:
    """The given images, in argument order; a missing (None) one is skipped.

    Each is loaded under its input's name (``style_image_2`` -> "style image 2"), so an error names the input
    the user has to fix even when an earlier optional one was left out.
    """
    return [
        media.load_image(path, what=name.replace("_", " "))
        for name, path in paths.items()
        if path is not None
    ]
