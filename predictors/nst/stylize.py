"""Gatys neural style transfer: losses, optimiser loop, coarse-to-fine pyramid and colour preservation.

Plain PyTorch. Images are float tensors (1, 3, H, W), RGB in 0..1, on the feature extractor's device.

Loss normalisation (so that one set of weights gives the same balance at every image size and layer width):
- Gram matrices are divided by C*H*W: each entry is a mean over positions, divided by the channel count.
- Content and style terms are relative squared errors, ||A - T||^2 / ||T||^2, so layers with large and small
  activations count alike and the terms do not grow with the pixel count.
- TV is the mean squared difference of neighbouring pixels.
The content layer is relu4_2: the classic reference names it conv4_2 but its in-place ReLU overwrites the
convolution output, so relu4_2 is what its published results were made with.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from predictors.common.runtime import progress_bar
from predictors.nst.colour import (
    COLOUR_MODES,
    grey_rgb,
    luminance,
    match_histogram,
    match_luminance,
    recombine_luminance,
)
from predictors.nst.vgg import VGGFeatures

CONTENT_LAYER = "relu4_2"
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise", "style", "image")
# L-BFGS keeps two image-sized vectors per history entry; this bounds their total.
LBFGS_HISTORY_BYTES = 1 << 30
MAX_LBFGS_HISTORY = 100
MIN_LBFGS_HISTORY = 5
_EPS = 1e-8
MIN_SIDE = 16
# With the relative-error terms below, style counts ten times the content by default.
STYLE_WEIGHT = 10.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    content_weight: float = 1.0
    style_weight: float = STYLE_WEIGHT
    tv_weight: float = 1.0
    style_layer_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)
    iterations: int = 300
    optimizer: str = "lbfgs"
    adam_lr: float = 0.02
    init: str = "content"
    colour: str = "none"
    style_scale: float = 1.0
    pyramid_start: int = 256
    seed: int = 0
    preview_every: int = 0

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.colour not in COLOUR_MODES:
            raise ValueError(f"colour must be one of {COLOUR_MODES}, got {self.colour!r}")
        if len(self.style_layer_weights) != len(STYLE_LAYERS):
            raise ValueError(f"style_layer_weights needs {len(STYLE_LAYERS)} values, one per {STYLE_LAYERS}")
        if self.iterations < 0:
            raise ValueError("iterations must be >= 0")


@dataclass(frozen=True)
class Scale:
    width: int
    height: int
    iterations: int


@dataclass
class Step:
    """Reported after every iteration."""

    scale: int
    scales: int
    iteration: int
    total: int
    size: tuple[int, int]
    losses: dict[str, float]


@dataclass
class Result:
    image: torch.Tensor
    evaluations: int
    losses: dict[str, float] = field(default_factory=dict)


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


def to_tensor(image: Image.Image) -> torch.Tensor:
    """8-bit RGB PIL image -> (1, 3, H, W) float tensor in 0..1."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None].contiguous()


def to_image(tensor: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) tensor in 0..1 -> 8-bit RGB PIL image (rounded, clamped)."""
    pixels = tensor[0].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray((pixels * 255 + 0.5).astype(np.uint8))


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


def normalised_weights(weights: Sequence[float], what: str) -> list[float]:
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"{what} must be non-negative and not all zero, got {list(weights)}")
    total = float(sum(weights))
    return [w / total for w in weights]


def blend_grams(
    grams: Sequence[dict[str, torch.Tensor]], weights: Sequence[float]
) -> dict[str, torch.Tensor]:
    """Weighted mean of several style images' Gram matrices (weights are normalised to sum to 1)."""
    if len(grams) != len(weights):
        raise ValueError(f"{len(grams)} style images but {len(weights)} blend weights")
    weights = normalised_weights(weights, "style blend weights")
    return {layer: sum(w * g[layer] for w, g in zip(weights, grams, strict=True)) for layer in grams[0]}


def resize(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    if image.shape[-1] == width and image.shape[-2] == height:
        return image
    return F.interpolate(
        image, size=(height, width), mode="bicubic", antialias=True, align_corners=False
    ).clamp(0, 1)


def build_schedule(width: int, height: int, iterations: int, start: int = 256) -> list[Scale]:
    """Coarse-to-fine sizes from about ``start`` px (long side) to the target, in octaves.

    The coarsest scale runs ``iterations``; each finer one half as many as the one below (at least a quarter
    of ``iterations``), because a finer scale starts from the upsampled result and costs 4x per iteration.
    """
    long_side = max(width, height)
    octaves = max(0, round(math.log2(long_side / start))) if long_side > start else 0
    # Every scale keeps its short side at MIN_SIDE or more, so relu5_1 (after four 2x2 poolings) is not empty.
    octaves = min(octaves, max(0, math.floor(math.log2(min(width, height) / MIN_SIDE))))
    scales = []
    for level in range(octaves, -1, -1):
        factor = 2.0**-level
        step = octaves - level
        count = iterations if step == 0 else max(math.ceil(iterations / 2**step), math.ceil(iterations / 4))
        scales.append(Scale(max(1, round(width * factor)), max(1, round(height * factor)), count))
    return scales


def lbfgs_history(numel: int) -> int:
    """History length whose two vectors per entry fit in LBFGS_HISTORY_BYTES (fp32)."""
    return max(MIN_LBFGS_HISTORY, min(MAX_LBFGS_HISTORY, LBFGS_HISTORY_BYTES // (8 * numel)))


def prepare_for_device(vgg: VGGFeatures) -> None:
    """On CUDA: channels_last weights (Objective feeds channels_last images) and cuDNN autotuning."""
    if vgg.mean.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        vgg.to(memory_format=torch.channels_last)


def vgg_autocast(device: torch.device):
    """bf16 (else fp16) autocast for the VGG pass on CUDA; full precision elsewhere."""
    if device.type != "cuda":
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


class Objective:
    """The Gatys objective for one content size: weighted content, style and TV terms."""

    def __init__(
        self,
        vgg: VGGFeatures,
        content: torch.Tensor,
        style_grams: dict[str, torch.Tensor],
        settings: Settings,
    ):
        self.vgg = vgg
        self.settings = settings
        self.layer_weights = dict(
            zip(
                STYLE_LAYERS,
                normalised_weights(settings.style_layer_weights, "style layer weights"),
                strict=True,
            )
        )
        with torch.no_grad(), vgg_autocast(self.vgg.mean.device):
            self.content_target = vgg(content)[CONTENT_LAYER].float()
        self.style_grams = style_grams

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with vgg_autocast(self.vgg.mean.device):
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
        total = (
            self.settings.content_weight * content
            + self.settings.style_weight * style
            + self.settings.tv_weight * tv
        )
        return total, {"content": content, "style": style, "tv": tv}


def style_targets(
    vgg: VGGFeatures,
    styles: Sequence[torch.Tensor],
    blend: Sequence[float],
    content_size: tuple[int, int],
    style_scale: float,
) -> dict[str, torch.Tensor]:
    """Blended Gram targets, each style resized so its long side is ``style_scale`` x the content's."""
    grams = []
    target_long = max(content_size) * style_scale
    for style in styles:
        height, width = style.shape[-2:]
        factor = target_long / max(width, height)
        sized = resize(style, max(MIN_SIDE, round(width * factor)), max(MIN_SIDE, round(height * factor)))
        # The same precision as the optimised image's VGG pass, so target and current features compare alike.
        with torch.no_grad():
            with vgg_autocast(sized.device):
                features = vgg(sized)
            grams.append({layer: gram_matrix(features[layer]) for layer in STYLE_LAYERS})
    return blend_grams(grams, blend)


def initial_image(
    settings: Settings,
    content: torch.Tensor,
    styles: Sequence[torch.Tensor],
    init_image: torch.Tensor | None,
) -> torch.Tensor:
    height, width = content.shape[-2:]
    if settings.init == "content":
        return content.clone()
    if settings.init == "noise":
        generator = torch.Generator().manual_seed(settings.seed)
        return torch.rand(content.shape, generator=generator).to(content)
    if settings.init == "style":
        return resize(styles[0], width, height)
    if init_image is None:
        raise ValueError('init "image" needs init_image')
    return resize(init_image.to(content), width, height)


def _make_optimizer(settings: Settings, image: torch.Tensor) -> torch.optim.Optimizer:
    if settings.optimizer == "adam":
        return torch.optim.Adam([image], lr=settings.adam_lr)
    # One iteration per step() so that previews, logs and cancellation come between iterations. No line
    # search (one evaluation per iteration), and tolerances that can never trigger: the default ones stop
    # the optimisation early at high resolutions, where the loss change per step becomes tiny.
    return torch.optim.LBFGS(
        [image],
        lr=1.0,
        max_iter=1,
        history_size=lbfgs_history(image.numel()),
        tolerance_grad=-math.inf,
        tolerance_change=-math.inf,
        line_search_fn=None,
    )


class Optimisation:
    """The optimiser on one objective, advanced one iteration (one objective evaluation) at a time."""

    def __init__(self, objective: Objective, image: torch.Tensor, settings: Settings):
        self.objective = objective
        self.clamp = settings.optimizer == "adam"
        # L-BFGS flattens the gradient with view(-1), which needs the standard contiguous layout.
        self.image = image.detach().contiguous().clone().requires_grad_(True)
        self.optimizer = _make_optimizer(settings, self.image)
        self.evaluations = 0
        self._terms: dict[str, torch.Tensor] = {}

    def _closure(self) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss, terms = self.objective(self.image)
        loss.backward()
        self._terms = {"total": loss.detach(), **{k: v.detach() for k, v in terms.items()}}
        self.evaluations += 1
        return loss

    def step(self) -> dict[str, float]:
        """One iteration; returns the loss terms evaluated at its start."""
        self.optimizer.step(self._closure)
        if self.clamp:
            # Adam takes fixed-size steps that can leave the valid range; L-BFGS is left alone because
            # clamping behind its back would corrupt its curvature history.
            with torch.no_grad():
                self.image.clamp_(0, 1)
        return {k: float(v) for k, v in self._terms.items()}

    def current(self) -> torch.Tensor:
        return self.image.detach().clamp(0, 1)


@dataclass
class Preview:
    image: torch.Tensor
    step: Step


def iterate(
    vgg: VGGFeatures,
    content: torch.Tensor,
    styles: Sequence[torch.Tensor],
    settings: Settings,
    *,
    blend: Sequence[float] | None = None,
    init_image: torch.Tensor | None = None,
    on_step: Callable[[Step], None] | None = None,
) -> Iterator[Preview | Result]:
    """Stylise ``content`` (at its full output size) with the blended ``styles``, coarse to fine.

    Yields a Preview (the current image in output colours) every ``settings.preview_every`` iterations and
    the Result last. ``on_step`` runs after every iteration. One progress bar counts the iterations of every
    scale, and each scale ends with one log line.
    """
    if not styles:
        raise ValueError("at least one style image is needed")
    blend = list(blend) if blend is not None else [1.0] * len(styles)
    device = vgg.mean.device
    prepare_for_device(vgg)
    content = content.to(device)
    styles = [style.to(device) for style in styles]
    original_content = content
    if settings.colour == "histogram":
        styles = [match_histogram(style, content) for style in styles]
    elif settings.colour == "luminance":
        content_y = luminance(content)
        styles = [grey_rgb(match_luminance(luminance(style), content_y)) for style in styles]
        content = grey_rgb(content_y)

    def output_colours(image: torch.Tensor) -> torch.Tensor:
        if settings.colour != "luminance":
            return image.clamp(0, 1)
        height, width = image.shape[-2:]
        return recombine_luminance(image, resize(original_content, width, height))

    def first_image(scaled_content: torch.Tensor) -> torch.Tensor:
        start = initial_image(settings, scaled_content, styles, init_image)
        if settings.colour == "luminance" and settings.init in ("style", "image"):
            start = grey_rgb(luminance(start))
        return start

    height, width = content.shape[-2:]
    if settings.iterations == 0:
        yield Result(output_colours(first_image(content)), 0)
        return
    schedule = build_schedule(width, height, settings.iterations, settings.pyramid_start)
    total = sum(scale.iterations for scale in schedule)
    image = None
    evaluations = 0
    done = 0
    losses: dict[str, float] = {}
    # One bar over every scale: a client sees one count rise from 0 to the whole run's iterations.
    with progress_bar(total) as bar:
        for index, scale in enumerate(schedule):
            scaled_content = resize(content, scale.width, scale.height)
            start = first_image(scaled_content) if image is None else resize(image, scale.width, scale.height)
            grams = style_targets(vgg, styles, blend, (scale.width, scale.height), settings.style_scale)
            optimisation = Optimisation(Objective(vgg, scaled_content, grams, settings), start, settings)
            for _ in range(scale.iterations):
                losses = optimisation.step()
                done += 1
                bar.update(1)
                step = Step(index, len(schedule), done, total, (scale.width, scale.height), losses)
                if on_step is not None:
                    on_step(step)
                if settings.preview_every and done % settings.preview_every == 0 and done < total:
                    yield Preview(output_colours(optimisation.current()), step)
            image = optimisation.current()
            evaluations += optimisation.evaluations
            log.info(
                "Scale %d/%d (%dx%d) done: %d iterations, last losses %s",
                index + 1,
                len(schedule),
                scale.width,
                scale.height,
                scale.iterations,
                " ".join(f"{name} {value:.4g}" for name, value in losses.items()),
            )
    yield Result(output_colours(image), evaluations, losses)


def stylize(
    vgg: VGGFeatures,
    content: torch.Tensor,
    styles: Sequence[torch.Tensor],
    settings: Settings,
    **options,
) -> Result:
    """``iterate`` run to the end; returns the Result (previews are dropped)."""
    for event in iterate(vgg, content, styles, settings, **options):
        if isinstance(event, Result):
            return event
    raise AssertionError("iterate() ends with a Result")
