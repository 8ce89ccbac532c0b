"""MusePose's resizes give what Pillow 10.4.0 (upstream's oracles, MusePose's users) gives, on every size.

tests/data/resize_pillow_10_4.json holds the sha256 of each case of tools/resize_fixtures.py, written once
with Pillow 10.4.0; the sources are recomputed here from the same integer arithmetic.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from predictors.musepose.pipeline import resize_horizontal_first, resize_poses
from tools.resize_fixtures import CASES, FILTERS, case_name, checksums, source_image

FIXTURES = json.loads((Path(__file__).resolve().parents[1] / "data/resize_pillow_10_4.json").read_text())


@pytest.fixture(scope="module")
def source():
    """Each source image once per module (the 4K ones take a moment), released with the module."""
    return functools.cache(lambda size: source_image(*size))


def vertical_first_in_pillow_13(source_size, target_size) -> bool:
    """Pillow 13's rule (Pillow#9549): the vertical pass runs first when the height loses more than twice
    as many pixels as the width."""
    (width, height), (new_width, new_height) = source_size, target_size
    return new_height < height and height - new_height > 2 * (width - new_width)


def test_the_fixtures_are_pillow_10_4_and_cover_the_matrix():
    assert FIXTURES["pillow"] == "10.4.0"
    assert sorted(FIXTURES["cases"]) == sorted(case_name(s, t, name) for s, t in CASES for name in FILTERS)
    shapes = {
        "portrait": any(h > w for (w, h), _ in CASES),
        "landscape": any(w > h for (w, h), _ in CASES),
        "square": any(w == h for (w, h), _ in CASES),
        "odd": any(w % 2 and h % 2 for (w, h), _ in CASES),
        "1080p": any(sorted(s) == [1080, 1920] for s, _ in CASES),
        "4K": any(sorted(s) == [2160, 3840] for s, _ in CASES),
        "up": any(t[0] > s[0] and t[1] > s[1] for s, t in CASES),
        "down": any(t[0] < s[0] and t[1] < s[1] for s, t in CASES),
        "mixed": any((t[0] - s[0]) * (t[1] - s[1]) < 0 for s, t in CASES),
        "pass order matters": sum(vertical_first_in_pillow_13(s, t) for s, t in CASES) >= 5,
    }
    assert all(shapes.values()), shapes


@pytest.mark.parametrize("filter_name", sorted(FILTERS))
@pytest.mark.parametrize(("source_size", "target_size"), CASES, ids=lambda size: "x".join(map(str, size)))
def test_resize_equals_pillow_10_4(source, source_size, target_size, filter_name):
    wanted = FIXTURES["cases"][case_name(source_size, target_size, filter_name)]
    got = checksums(resize_horizontal_first(source(source_size), target_size, FILTERS[filter_name]))
    assert got["channel_sums"] == wanted["channel_sums"] and got["corner"] == wanted["corner"]
    assert got["sha256"] == wanted["sha256"]


def test_pose_frames_take_that_resize(source):
    """resize_poses (Lanczos to the generation size) on a case where Pillow 13's own order differs."""
    source_size, target_size = (576, 768), (512, 320)
    assert vertical_first_in_pillow_13(source_size, target_size)
    frame = np.asarray(source(source_size))
    resized = resize_poses([frame, Image.fromarray(frame)], *target_size)
    wanted = FIXTURES["cases"][case_name(source_size, target_size, "lanczos")]["sha256"]
    assert checksums(Image.fromarray(resized[0]))["sha256"] == wanted
    np.testing.assert_array_equal(resized[1], resized[0])


def test_a_size_that_does_not_change_is_not_resampled(source):
    image = source((97, 61))
    assert resize_horizontal_first(image, (97, 61), Image.LANCZOS) is image
    # One side only: exactly Pillow's single pass on that side.
    np.testing.assert_array_equal(
        np.asarray(resize_horizontal_first(image, (97, 20), Image.BICUBIC)),
        np.asarray(image.resize((97, 20), Image.BICUBIC)),
    )
