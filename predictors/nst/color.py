"""Color preservation for style transfer (Gatys et al. 2016, "Preserving Color in Neural Artistic Style
Transfer").

Images are float tensors of shape (1, 3, H, W), RGB in 0..1.
- Luminance-only: transfer on the Y channel of YIQ, with the style's luminance mean and standard deviation
  matched to the content's, then put the content's I and Q back.
- Histogram: before the transfer, the style image's colours are given the content's mean and covariance.
"""

from __future__ import annotations

import torch

COLOR_PRESERVATIONS = ("none", "luminance", "histogram")

_RGB_TO_YIQ = torch.tensor(
    [
        [0.299, 0.587, 0.114],
        [0.595716, -0.274453, -0.321263],
        [0.211456, -0.522591, 0.311135],
    ]
)
_EPS = 1e-5


def rgb_to_yiq(image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", _RGB_TO_YIQ.to(image), image)


def yiq_to_rgb(image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", torch.linalg.inv(_RGB_TO_YIQ).to(image), image)


def luminance(image: torch.Tensor) -> torch.Tensor:
    """The Y channel, shape (1, 1, H, W)."""
    return rgb_to_yiq(image)[:, :1]


def match_luminance(style_y: torch.Tensor, content_y: torch.Tensor) -> torch.Tensor:
    """Shift and scale the style luminance to the content luminance's mean and standard deviation."""
    scale = content_y.std() / (style_y.std() + _EPS)
    return (style_y - style_y.mean()) * scale + content_y.mean()


def gray_rgb(y: torch.Tensor) -> torch.Tensor:
    """A (1, 1, H, W) luminance as a three-channel image, the way VGG sees a luminance-only image."""
    return y.expand(-1, 3, -1, -1).clamp(0, 1)


def recombine_luminance(result: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The result's luminance with the content's chrominance (I and Q)."""
    yiq = rgb_to_yiq(content)
    yiq = torch.cat([luminance(result), yiq[:, 1:]], dim=1)
    return yiq_to_rgb(yiq).clamp(0, 1)


def _mean_covariance(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = image.reshape(3, -1).double()
    mean = pixels.mean(dim=1, keepdim=True)
    centered = pixels - mean
    cov = centered @ centered.T / pixels.shape[1] + _EPS * torch.eye(3, dtype=pixels.dtype)
    return mean, cov


def _sym_power(matrix: torch.Tensor, power: float) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag(values.clamp_min(_EPS) ** power) @ vectors.T


def match_histogram(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The style image with the content's colour mean and covariance.

    Uses the symmetric square roots (x' = C_c^1/2 C_s^-1/2 (x - mu_s) + mu_c): of the linear maps that match
    the two moments, it rotates the colours least.
    """
    mean_s, cov_s = _mean_covariance(style)
    mean_c, cov_c = _mean_covariance(content)
    transform = _sym_power(cov_c, 0.5) @ _sym_power(cov_s, -0.5)
    pixels = style.reshape(3, -1).double()
    matched = transform @ (pixels - mean_s) + mean_c
    return matched.to(style.dtype).reshape(style.shape).clamp(0, 1)
