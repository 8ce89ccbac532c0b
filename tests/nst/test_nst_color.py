"""Colour preservation: luminance-only transfer (YIQ) and histogram matching, on known statistics."""

from __future__ import annotations

import pytest
import torch

from predictors.nst.color import (
    luminance,
    match_histogram,
    match_luminance,
    recombine_luminance,
    rgb_to_yiq,
    yiq_to_rgb,
)
from predictors.nst.objective import CONTENT_LAYER, STYLE_LAYERS
from predictors.nst.vgg import VGGFeatures
from tests.nst_jobs import make_job, run_to_end
from tools.tiny_weights.vgg19 import tiny_vgg19_state_dict


def gaussian_image(mean, cov, size=64, seed=0):
    """(1, 3, size, size) pixels drawn from N(mean, cov); small covariances keep them inside 0..1."""
    generator = torch.Generator().manual_seed(seed)
    mean = torch.tensor(mean, dtype=torch.float64)
    chol = torch.linalg.cholesky(torch.tensor(cov, dtype=torch.float64))
    pixels = mean[:, None] + chol @ torch.randn(3, size * size, generator=generator, dtype=torch.float64)
    return pixels.float().reshape(1, 3, size, size)


def stats(image):
    pixels = image.reshape(3, -1).double()
    return pixels.mean(1), torch.cov(pixels, correction=0)


CONTENT_MEAN, CONTENT_COV = (
    [0.6, 0.4, 0.3],
    [[0.010, 0.004, 0.002], [0.004, 0.008, 0.001], [0.002, 0.001, 0.006]],
)
STYLE_MEAN, STYLE_COV = [0.2, 0.3, 0.7], [[0.004, -0.001, 0.0], [-0.001, 0.012, 0.003], [0.0, 0.003, 0.009]]


# The NTSC YIQ transform as published (FCC, 1953; the rounding of e.g. Poynton's "Digital Video and HD"):
# rows Y, I, Q; columns R, G, B.
PUBLISHED_YIQ = (
    (0.299, 0.587, 0.114),
    (0.5959, -0.2746, -0.3213),
    (0.2115, -0.5227, 0.3112),
)


def test_yiq_is_the_published_ntsc_matrix():
    # The image of a pure primary is that primary's column of the matrix.
    primaries = torch.eye(3).view(3, 3, 1, 1)
    columns = torch.cat([rgb_to_yiq(primaries[i : i + 1]) for i in range(3)], dim=0).view(3, 3)
    matrix = columns.T
    published = torch.tensor(PUBLISHED_YIQ)
    # Y is defined exactly; I and Q are published to four decimals.
    assert torch.allclose(matrix[0], published[0], atol=1e-6)
    assert torch.allclose(matrix[1:], published[1:], atol=5e-4)
    image = torch.rand(1, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    expected = torch.einsum("ij,njhw->nihw", published, image)
    assert torch.allclose(rgb_to_yiq(image), expected, atol=5e-4)
    assert torch.allclose(luminance(image), expected[:, :1], atol=1e-6)
    # yiq_to_rgb inverts it: the published inverse's first column is 1 (Y carries the grey level).
    assert torch.allclose(
        yiq_to_rgb(torch.tensor([0.5, 0.0, 0.0]).view(1, 3, 1, 1)).flatten(), torch.full((3,), 0.5)
    )


def test_yiq_round_trip():
    image = torch.rand(1, 3, 8, 8)
    assert torch.allclose(yiq_to_rgb(rgb_to_yiq(image)), image, atol=1e-5)
    grey = torch.full((1, 3, 4, 4), 0.5)
    assert torch.allclose(rgb_to_yiq(grey)[:, 1:], torch.zeros(1, 2, 4, 4), atol=1e-6)


def test_luminance_matching_takes_the_content_mean_and_std():
    content = gaussian_image(CONTENT_MEAN, CONTENT_COV)
    style = gaussian_image(STYLE_MEAN, STYLE_COV, seed=1)
    matched = match_luminance(luminance(style), luminance(content))
    assert float(matched.mean()) == pytest.approx(float(luminance(content).mean()), abs=1e-5)
    assert float(matched.std()) == pytest.approx(float(luminance(content).std()), rel=1e-3)
    # The shape of the style's luminance is kept: an affine map, so the correlation is 1.
    assert float(torch.corrcoef(torch.stack([matched.flatten(), luminance(style).flatten()]))[0, 1]) > 0.9999


def test_recombine_keeps_result_luminance_and_content_chrominance():
    content = gaussian_image(CONTENT_MEAN, CONTENT_COV)
    result = gaussian_image(STYLE_MEAN, STYLE_COV, seed=2)
    combined = rgb_to_yiq(recombine_luminance(result, content))
    # Compare where the recombined colour is inside the RGB cube (elsewhere it is clamped).
    unclamped = yiq_to_rgb(torch.cat([luminance(result), rgb_to_yiq(content)[:, 1:]], 1))
    inside = ((unclamped >= 0) & (unclamped <= 1)).all(1, keepdim=True)
    assert inside.float().mean() > 0.9
    assert torch.allclose(combined[:, :1][inside], luminance(result)[inside], atol=1e-4)
    inside_iq = inside.expand(-1, 2, -1, -1)
    assert torch.allclose(combined[:, 1:][inside_iq], rgb_to_yiq(content)[:, 1:][inside_iq], atol=1e-4)


def test_histogram_matching_gives_the_style_the_content_color_statistics():
    content = gaussian_image(CONTENT_MEAN, CONTENT_COV)
    style = gaussian_image(STYLE_MEAN, STYLE_COV, seed=1)
    mean, cov = stats(match_histogram(style, content))
    target_mean, target_cov = stats(content)
    assert torch.allclose(mean, target_mean, atol=2e-3)
    assert torch.allclose(cov, target_cov, atol=3e-4)
    # Before matching the statistics were far apart.
    assert (stats(style)[0] - target_mean).abs().max() > 0.3


def test_luminance_mode_end_to_end_keeps_the_content_colors():
    vgg = VGGFeatures(tiny_vgg19_state_dict(seed=0), (*STYLE_LAYERS, CONTENT_LAYER))
    content = gaussian_image(CONTENT_MEAN, CONTENT_COV, size=32)
    style = gaussian_image(STYLE_MEAN, STYLE_COV, size=32, seed=1)
    result = run_to_end(vgg, content, [style], make_job(iterations=5, color_preservation="luminance")).image
    # Chrominance is the content's (up to clamping at 0 and 1); luminance moved.
    assert torch.allclose(rgb_to_yiq(result)[:, 1:], rgb_to_yiq(content)[:, 1:], atol=0.02)
    assert not torch.allclose(luminance(result), luminance(content), atol=1e-3)


def test_histogram_mode_moves_result_colors_less_than_plain_transfer():
    vgg = VGGFeatures(tiny_vgg19_state_dict(seed=0), (*STYLE_LAYERS, CONTENT_LAYER))
    content = gaussian_image(CONTENT_MEAN, CONTENT_COV, size=32)
    style = gaussian_image(STYLE_MEAN, STYLE_COV, size=32, seed=1)

    def mean_shift(mode):
        job = make_job(iterations=10, color_preservation=mode, init="noise")
        result = run_to_end(vgg, content, [style], job).image
        return float((stats(result)[0] - stats(content)[0]).abs().sum())

    assert mean_shift("histogram") < mean_shift("none")
