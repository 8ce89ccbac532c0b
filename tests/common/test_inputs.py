"""Blend weights as the predictors accept them: "1,0.5" for several style images."""

from __future__ import annotations

import pytest

from predictors.common.errors import InputError
from predictors.common.inputs import parse_blend_weights


def test_empty_means_equal_weights():
    assert parse_blend_weights("", 3) == [1.0, 1.0, 1.0]
    assert parse_blend_weights("  ", 1) == [1.0]


def test_parses_numbers_with_spaces():
    assert parse_blend_weights("1, 0.5", 2) == [1.0, 0.5]


@pytest.mark.parametrize(
    ("text", "count", "fragment"),
    [
        ("1,x", 2, "comma-separated numbers"),
        ("1", 2, "has 1 value(s) but 2 style image(s)"),
        ("-1,2", 2, "non-negative"),
        ("0,0", 2, "not all zero"),
        ("nan,1", 2, "non-negative"),
    ],
)
def test_bad_weights_say_what_to_fix(text, count, fragment):
    with pytest.raises(InputError, match="style_weights") as raised:
        parse_blend_weights(text, count)
    assert fragment in str(raised.value)
