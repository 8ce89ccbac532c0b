"""Hostile inputs against sd_style through the real Cog server on tiny SD1.5 weights: JSON integers for
float inputs, slivers and elongated style images, a broken third style image, a megabyte of style weights.
Every case: one clear sentence, READY again, the next prediction succeeds, nothing left in the temp
directory (``tests/http/hostile.py``)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.http import hostile
from tests.http.harness import data_uri, tiny_environment

pytestmark = [pytest.mark.http, pytest.mark.xdist_group("http-sd-style")]


@pytest.fixture(scope="module")
def ok(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sd-style-hostile")
    pixels = np.full((48, 64, 3), 80, np.uint8)
    pixels[10:30, 15:45] = 230
    Image.fromarray(pixels).save(folder / "content.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
        folder / "style.png"
    )
    return {
        "image": data_uri(folder / "content.png"),
        "style_image": data_uri(folder / "style.png"),
        "num_inference_steps": 1,
        "max_side": 256,
        "seed": 1,
        "disable_safety_checker": True,
    }


@pytest.fixture(scope="module")
def server(predictor_server):
    return predictor_server("predictors/sd_style/predict.py", env=tiny_environment(["sd15", "sdxl"]))


def test_every_float_input_takes_a_json_integer(server, ok):
    # diffusers refused an int controlnet_conditioning_scale ("must be type float") before the boundary.
    integers = {
        "structure_strength": 1,
        "style_strength": 1,
        "denoise_strength": 1,
        "guidance_scale": 6,
        "megapixels": 1,
    }
    hostile.accepted(server, {**ok, **integers}, ok=ok)


@pytest.mark.parametrize(
    ("field", "data", "fragment"),
    [
        (
            "style_image",
            hostile.png_header(40000, 1),
            "The style image is 40000x1 pixels; each side must be at least 16",
        ),
        ("style_image", hostile.png_header(4000, 300), "its long side is more than 10 times its short side"),
        ("image", hostile.png_header(20, 20000), "The image is 20x20000 pixels"),
        ("style_image_3", b"GIF89a broken", "The style image 3 is not a picture file we can read"),
    ],
    ids=["sliver", "elongated-style", "elongated-content", "third-style-named"],
)
def test_a_broken_or_extreme_image_ends_in_a_sentence(server, ok, field, data, fragment):
    hostile.refused(server, {**ok, field: hostile.bytes_uri(data)}, fragment, ok=ok)


def test_a_megabyte_of_style_weights_is_not_echoed_back(server, ok):
    hostile.refused(server, {**ok, "style_weights": "1;" * 500_000}, "(1000002 characters)", ok=ok)


def test_canny_thresholds_in_the_wrong_order(server, ok):
    hostile.refused(
        server, {**ok, "canny_low": 200, "canny_high": 100}, "canny_low (200) must be below", ok=ok
    )
