"""Hostile inputs against nst through the real Cog server on tiny weights: broken and extreme images, an
EPS file, numbers sent as JSON integers, a megabyte of style weights. Every case: one clear sentence, READY
again, the next prediction succeeds, nothing left in the temp directory (``tests/http/hostile.py``)."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.conftest import REPO_ROOT
from tests.http import hostile
from tests.http.harness import data_uri, tiny_environment

pytestmark = [pytest.mark.http, pytest.mark.xdist_group("http-nst")]

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nnewpath 0 0 moveto 16 16 lineto stroke\nshowpage\n"


@pytest.fixture(scope="module")
def ok(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nst-hostile")
    Image.open(REPO_ROOT / "examples" / "content.jpg").resize((48, 32)).save(folder / "content.png")
    Image.open(REPO_ROOT / "examples" / "style.png").resize((32, 32)).save(folder / "style.png")
    return {
        "image": data_uri(folder / "content.png"),
        "style_image": data_uri(folder / "style.png"),
        "max_side": 64,
        "iterations": 1,
        "preview_every": 0,
    }


@pytest.fixture(scope="module")
def server(predictor_server):
    return predictor_server("predictors/nst/predict.py", env=tiny_environment(["vgg19"]))


@pytest.mark.parametrize(
    ("field", "data", "fragment"),
    [
        ("image", b"a shopping list, not a photo", "The image is not a picture file we can read"),
        ("image", b"", "The image is empty (0 bytes)"),
        (
            "image",
            hostile.png_header(64, 64) + b"\0\0\0\x10IDAT",
            "The image is truncated or corrupt",
        ),
        ("image", hostile.png_header(50000, 50000), "The image is too large to decode safely"),
        ("style_image", hostile.png_header(40000, 1), "each side must be at least 16 pixels"),
        ("image", hostile.png_header(4000, 300), "its long side is more than 10 times its short side"),
        ("style_image", EPS, "The style image is not a picture file we can read"),
        ("style_image_3", b"not a picture", "The style image 3 is not a picture file we can read"),
    ],
    ids=["text", "empty", "truncated", "bomb", "sliver", "elongated", "eps", "third-style-named"],
)
def test_a_broken_or_extreme_image_ends_in_a_sentence(server, ok, field, data, fragment):
    hostile.refused(server, {**ok, field: hostile.bytes_uri(data)}, fragment, ok=ok)


def test_numbers_sent_as_json_integers_work(server, ok):
    changes = {"style_strength": 1, "content_weight": 2, "tv_weight": 0, "style_scale": 1}
    hostile.accepted(server, {**ok, **changes}, ok=ok)


@pytest.mark.parametrize(
    ("weights", "fragment"),
    [("1," * 300_000, "(600002 characters)"), ("1,2", "style_weights has 2 value(s) but 1 style image(s)")],
    ids=["megabyte", "count"],
)
def test_bad_style_weights_end_in_a_short_sentence(server, ok, weights, fragment):
    hostile.refused(server, {**ok, "style_weights": weights}, fragment, ok=ok)


def test_a_path_on_the_server_is_refused(server, ok):
    hostile.refused(
        server,
        {**ok, "style_image": "/etc/hostname"},
        "The style image must be given as an http(s) URL",
        ok=ok,
    )


def test_nothing_was_written_into_home(server):
    assert sorted(str(path) for path in server.home_dir.rglob("*")) == []
