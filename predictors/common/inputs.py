"""Parsing of text inputs that several predictors accept in the same form."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from PIL import Image

from predictors.common import media
from predictors.common.errors import InputError, excerpt


def parse_blend_weights(text: str, count: int, name: str = "style_weights") -> list[float]:
    """``"1,0.5"`` -> [1.0, 0.5]; empty means ``count`` equal weights.

    Only the form is checked here (InputError with a sentence that shows it); what the numbers must be is the
    core's ``check()``, through ``check_blend_weights``.
    """
    if not text.strip():
        return [1.0] * count
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise InputError(
            f"{name} must be comma-separated numbers such as '1,0.5', got {excerpt(text)}."
        ) from None


def check_blend_weights(weights: Sequence[float], count: int, name: str = "style_weights") -> None:
    """One weight per style image, none negative or NaN, not all zero: the rule both image cores apply."""
    if len(weights) != count:
        raise InputError(f"{name} has {len(weights)} value(s) but {count} style image(s) were given.")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise InputError(f"{name} must be non-negative and not all zero, got {list(weights)}.")


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
