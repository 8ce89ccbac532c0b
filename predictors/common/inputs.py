"""Parsing of text inputs that several predictors accept in the same form."""

from __future__ import annotations

import math

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
