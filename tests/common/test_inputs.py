"""Blend weights as the predictors accept them: "1,0.5" for several style images."""

from __future__ import annotations

import pytest

from predictors.common.errors import InputError
from predictors.common.inputs import check_blend_weights, parse_blend_weights


def test_empty_means_equal_weights():
    assert parse_blend_weights("", 3) == [1.0, 1.0, 1.0]
    assert parse_blend_weights("  ", 1) == [1.0]


def test_parses_numbers_with_spaces():
    assert parse_blend_weights("1, 0.5", 2) == [1.0, 0.5]


def test_parsing_checks_only_the_form():
    """What the numbers must be is the cores' check(), through check_blend_weights."""
    assert parse_blend_weights("1", 2) == [1.0]
    assert parse_blend_weights("-1,0", 2) == [-1.0, 0.0]
    with pytest.raises(InputError, match=r"style_weights must be comma-separated numbers such as '1,0.5'"):
        parse_blend_weights("1,x", 2)


@pytest.mark.parametrize(
    ("weights", "count", "message"),
    [
        ([1.0], 2, "style_weights has 1 value(s) but 2 style image(s) were given."),
        ([1.0, 1.0, 1.0], 2, "style_weights has 3 value(s) but 2 style image(s) were given."),
        ([-1.0, 2.0], 2, "style_weights must be non-negative and not all zero, got [-1.0, 2.0]."),
        ([0.0, 0.0], 2, "style_weights must be non-negative and not all zero, got [0.0, 0.0]."),
        ([float("nan"), 1.0], 2, "style_weights must be non-negative and not all zero, got [nan, 1.0]."),
    ],
)
def test_bad_weights_say_what_to_fix(weights, count, message):
    with pytest.raises(InputError) as raised:
        check_blend_weights(weights, count)
    assert str(raised.value) == message


def test_good_weights_pass():
    check_blend_weights([0.0, 0.5], 2)
    check_blend_weights([1.0], 1)
