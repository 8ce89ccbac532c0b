"""The Gatys objective: content, style (Gram matrices) and total-variation terms on VGG19 features, and the
precision the VGG pass runs in.

Images are float tensors (1, 3, H, W), RGB in 0..1, on the feature extractor's device.

Loss normalization (so that one set of weights gives the same balance at every image size and layer width):
- Gram matrices are divided by C*H*W: each entry is a mean over positions, divided by the channel count.
- Content and style terms are relative squared errors, ||A - T||^2 / ||T||^2, so layers with large and small
  activations count alike and the terms do not grow with the pixel count.
- TV is the mean squared difference of neighbouring pixels.
The content layer is relu4_2: the classic reference names it conv4_2 but its in-place ReLU overwrites the
convolution output, so relu4_2 is what its published results were made with.

Precision: the VGG pass may run under bf16 (or fp16) autocast; Gram matrices, targets and losses are always
fp32, because a bf16 Gram (8 mantissa bits, sums over up to 262144 positions) loses the small differences
the style term is made of.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import nullcontext

import torch
from torch.nn import functional as F

from predictors.common.errors import InputError
from predictors.nst.vgg import VGGFeatures

CONTENT_LAYER = "relu4_2"
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
STYLE_LAYER_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 1.0)
# With the relative-error terms below, style counts ten times the content at style_strength 1.
STYLE_WEIGHT = 10.0
MIN_SIDE = 16
_EPS = 1e-8

PRECISIONS = ("auto", "fp32", "bf16")
# The operator's override of precision "auto" (for example fp32 on a fleet where bf16 misbehaves).
PRECISION_ENV = "TRIPTYCH_NST_PRECISION"


def cpu_has_bf16() -> bool:
    """Whether oneDNN has native bf16 kernels on this CPU (AVX512-BF16 or AMX). Without them torch still runs
    bf16 convolutions, through reference kernels about a hundred times slower than fp32."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype of the VGG pass for the ``precision`` input on ``device`` (fp32: no autocast).

    An explicit "fp32" or "bf16" wins; "auto" takes TRIPTYCH_NST_PRECISION when set, else the hardware's
    best: on CUDA bf16 (fp16 where the GPU lacks bf16), on a CPU bf16 only with native bf16 kernels.
    """
    if precision == "auto":
        precision = os.environ.get(PRECISION_ENV, "").strip().lower() or "auto"
        if precision not in PRECISIONS:
            raise ValueError(f"{PRECISION_ENV}={precision!r} is not a precision; use auto, fp32 or bf16.")
    if precision == "fp32":
        return torch.float32
    if device.type == "cuda":
        if precision == "bf16" or torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16
    if precision == "bf16" and not cpu_has_bf16():
        raise InputError(
            "precision bf16 needs a CPU with native bf16 (AVX512-BF16 or AMX), which this one lacks; "
            "use auto or fp32."
        )
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


def autocast(dtype: torch.dtype, device: torch.device):
    """Autocast to ``dtype`` on ``device`` for the VGG pass; nothing for fp32."""
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


class _Gram(torch.autograd.Function):
    """flat @ flat.T with a one-matmul backward.

    Autograd's generic backward of ``a @ b`` with ``a = flat, b = flat.T`` runs two (C, C) x (C, HW) matmuls
    and adds them; since the product is symmetric in its input, (dG + dG^T) @ flat gives the same gradient in
    one. The Gram matmuls are the main cost above the bare VGG pass, so this saves about a third of it.
    """

    @staticmethod
    def forward(ctx, flat: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(flat)
        return flat @ flat.T

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (flat,) = ctx.saved_tensors
        return (grad + grad.T) @ flat


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) -> (C, C) Gram matrix divided by C*H*W, computed in fp32 (or fp64 for fp64 input)."""
    _, channels, height, width = features.shape
    flat = features.to(torch.promote_types(features.dtype, torch.float32)).reshape(channels, height * width)
    return _Gram.apply(flat) / (channels * height * width)


def relative_error(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (value.float() - target).pow(2).sum() / (target.pow(2).sum() + _EPS)


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between horizontally and vertically neighbouring pixels."""
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    return dx.pow(2).mean() + dy.pow(2).mean()


def normalized_weights(weights: Sequence[float]) -> list[float]:
    """``weights`` divided by their sum (the job's check() has made sure they are valid)."""
    total = float(sum(weights))
    return [w / total for w in weights]


def blend_grams(
    grams: Sequence[dict[str, torch.Tensor]], weights: Sequence[float]
) -> dict[str, torch.Tensor]:
    """Weighted mean of several style images' Gram matrices (weights are normalized to sum to 1)."""
    weights = normalized_weights(weights)
    return {layer: sum(w * g[layer] for w, g in zip(weights, grams, strict=True)) for layer in grams[0]}


def resize_tensor(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Antialiased bicubic resize of a (1, 3, H, W) image in 0..1 to ``width`` x ``height``."""
    if image.shape[-1] == width and image.shape[-2] == height:
        return image
    return F.interpolate(
        image, size=(height, width), mode="bicubic", antialias=True, align_corners=False
    ).clamp(0, 1)


def style_size(style: tuple[int, int], content: tuple[int, int], style_scale: float) -> tuple[int, int]:
    """(width, height) of a style image whose long side is ``style_scale`` x the content's long side."""
    target_long = max(content) * style_scale
    factor = target_long / max(style)
    return max(MIN_SIDE, round(style[0] * factor)), max(MIN_SIDE, round(style[1] * factor))


def style_targets(
    vgg: VGGFeatures,
    styles: Sequence[torch.Tensor],
    blend: Sequence[float],
    content_size: tuple[int, int],
    style_scale: float,
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """Blended Gram targets, each style resized so its long side is ``style_scale`` x the content's."""
    grams = []
    for style in styles:
        width, height = style_size((style.shape[-1], style.shape[-2]), content_size, style_scale)
        sized = resize_tensor(style, width, height)
        # The same precision as the optimized image's VGG pass, so target and current features compare alike.
        with torch.no_grad():
            with autocast(dtype, sized.device):
                features = vgg(sized)
            grams.append({layer: gram_matrix(features[layer]) for layer in STYLE_LAYERS})
    return blend_grams(grams, blend)


class Objective:
    """The Gatys objective for one content size: weighted content, style and TV terms."""

    def __init__(
        self,
        vgg: VGGFeatures,
        content: torch.Tensor,
        style_grams: dict[str, torch.Tensor],
        *,
        content_weight: float,
        style_weight: float,
        tv_weight: float,
        layer_weights: Sequence[float] = STYLE_LAYER_WEIGHTS,
        dtype: torch.dtype = torch.float32,
    ):
        self.vgg = vgg
        self.weights = (content_weight, style_weight, tv_weight)
        self.layer_weights = dict(zip(STYLE_LAYERS, normalized_weights(layer_weights), strict=True))
        self.dtype = dtype
        self.device = vgg.mean.device
        self.content = content
        self.size = (content.shape[-1], content.shape[-2])
        with torch.no_grad(), autocast(dtype, self.device):
            self.content_target = vgg(content)[CONTENT_LAYER].float()
        self.style_grams = style_grams

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with autocast(self.dtype, self.device):
            if image.device.type == "cuda":
                image = image.contiguous(memory_format=torch.channels_last)
            features = self.vgg(image)
        # Gram matrices and losses stay in fp32 whatever precision the VGG pass used.
        content = relative_error(features[CONTENT_LAYER], self.content_target)
        style = sum(
            weight * relative_error(gram_matrix(features[layer]), self.style_grams[layer])
            for layer, weight in self.layer_weights.items()
            if weight > 0
        )
        tv = tv_loss(image.float())
        content_weight, style_weight, tv_weight = self.weights
        total = content_weight * content + style_weight * style + tv_weight * tv
        return total, {"content": content, "style": style, "tv": tv}
