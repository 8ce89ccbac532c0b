"""The optimization: L-BFGS or Adam on the pixels, coarse to fine, one objective evaluation per iteration.

Plain PyTorch on tensors (1, 3, H, W), RGB in 0..1; ``iterate`` yields previews and the final image as
tensors, and the job module (``transfer.py``) turns them into pictures.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from predictors.common.runtime import Progress, progress_bar
from predictors.nst.color import gray_rgb, luminance, match_histogram, match_luminance, recombine_luminance
from predictors.nst.objective import (
    MIN_SIDE,
    STYLE_WEIGHT,
    Objective,
    resize_tensor,
    style_targets,
)
from predictors.nst.vgg import VGGFeatures

if TYPE_CHECKING:
    from predictors.nst.transfer import Job

# L-BFGS keeps two image-sized vectors per history entry; this bounds their total.
LBFGS_HISTORY_BYTES = 1 << 30
MAX_LBFGS_HISTORY = 100
MIN_LBFGS_HISTORY = 5
ADAM_LR = 0.02
# The coarsest scale's long side (about); a smaller output runs one scale.
PYRAMID_START = 256

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scale:
    width: int
    height: int
    iterations: int


@dataclass(frozen=True)
class Step(Progress):
    """One iteration: ``stage`` "scale i/n", ``step`` of ``total`` within that scale, plus the run's
    ``iteration`` count over every scale, the scale's index, size and the losses evaluated at its start."""

    scale: int
    scales: int
    iteration: int
    size: tuple[int, int]
    losses: dict[str, float]


@dataclass(frozen=True)
class Preview:
    """The current image in output colors (``step`` None: the fast start's image)."""

    image: Any
    step: Step | None


@dataclass(frozen=True)
class Final:
    """The finished image, the objective evaluations it took and the last losses."""

    image: Any
    evaluations: int
    losses: dict[str, float] = field(default_factory=dict)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """8-bit RGB PIL image -> (1, 3, H, W) float tensor in 0..1."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None].contiguous()


def to_image(tensor: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) tensor in 0..1 -> 8-bit RGB PIL image (rounded, clamped)."""
    pixels = tensor[0].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray((pixels * 255 + 0.5).astype(np.uint8))


def build_schedule(width: int, height: int, iterations: int, start: int = PYRAMID_START) -> list[Scale]:
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


def make_optimizer(optimizer: str, image: torch.Tensor, adam_lr: float = ADAM_LR) -> torch.optim.Optimizer:
    if optimizer == "adam":
        return torch.optim.Adam([image], lr=adam_lr)
    # One iteration per step() so that previews, logs and cancellation come between iterations. No line
    # search (one evaluation per iteration), and tolerances that can never trigger: the default ones stop
    # the optimization early at high resolutions, where the loss change per step becomes tiny.
    return torch.optim.LBFGS(
        [image],
        lr=1.0,
        max_iter=1,
        history_size=lbfgs_history(image.numel()),
        tolerance_grad=-math.inf,
        tolerance_change=-math.inf,
        line_search_fn=None,
    )


class Optimization:
    """The optimizer on one objective, advanced one iteration (one objective evaluation) at a time."""

    def __init__(self, objective: Objective, image: torch.Tensor, optimizer: str, adam_lr: float = ADAM_LR):
        self.objective = objective
        self.clamp = optimizer == "adam"
        # L-BFGS flattens the gradient with view(-1), which needs the standard contiguous layout.
        self.image = image.detach().contiguous().clone().requires_grad_(True)
        self.optimizer = make_optimizer(optimizer, self.image, adam_lr)
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


class _Colors:
    """What ``color_preservation`` does to the images the optimization sees, and back to output colors."""

    def __init__(self, mode: str, content: torch.Tensor, styles: Sequence[torch.Tensor]):
        self.mode = mode
        self.original = content
        if mode == "histogram":
            styles = [match_histogram(style, content) for style in styles]
        elif mode == "luminance":
            content_y = luminance(content)
            styles = [gray_rgb(match_luminance(luminance(style), content_y)) for style in styles]
            content = gray_rgb(content_y)
        self.content, self.styles = content, list(styles)

    def start(self, image: torch.Tensor, init: str) -> torch.Tensor:
        """A start from the style or the fast start, made grey like the content in luminance mode."""
        return gray_rgb(luminance(image)) if self.mode == "luminance" and init in ("style", "fast") else image

    def output(self, image: torch.Tensor) -> torch.Tensor:
        if self.mode != "luminance":
            return image.clamp(0, 1)
        height, width = image.shape[-2:]
        return recombine_luminance(image, resize_tensor(self.original, width, height))


def initial_image(
    job: Job, content: torch.Tensor, styles: Sequence[torch.Tensor], init_image: torch.Tensor | None
) -> torch.Tensor:
    """The starting image at the content's size; init "fast" takes ``init_image`` (the fast start's)."""
    height, width = content.shape[-2:]
    if job.init == "content":
        return content.clone()
    if job.init == "noise":
        generator = torch.Generator().manual_seed(job.seed)
        return torch.rand(content.shape, generator=generator).to(content)
    if job.init == "style":
        return resize_tensor(styles[0], width, height)
    if init_image is None:
        raise ValueError('init "fast" needs the fast start\'s image')
    return resize_tensor(init_image.to(content), width, height)


def _scale_objective(
    vgg: VGGFeatures, job: Job, colors: _Colors, scale: Scale, dtype: torch.dtype
) -> Objective:
    """The objective at one scale of the pyramid: the content and the style targets at that size."""
    size = (scale.width, scale.height)
    grams = style_targets(vgg, colors.styles, job.style_weights, size, job.style_scale, dtype)
    return Objective(
        vgg,
        resize_tensor(colors.content, *size),
        grams,
        content_weight=job.content_weight,
        style_weight=STYLE_WEIGHT * job.style_strength,
        tv_weight=job.tv_weight,
        layer_weights=job.style_layer_weights,
        dtype=dtype,
    )


def iterate(
    vgg: VGGFeatures,
    content: torch.Tensor,
    styles: Sequence[torch.Tensor],
    job: Job,
    *,
    init_image: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    on_step: Callable[[Step], None] | None = None,
) -> Iterator[Preview | Final]:
    """Stylize ``content`` (at its full output size) with the blended ``styles``, coarse to fine.

    Yields a Preview every ``job.preview_every`` iterations and the Final last, images as tensors.
    ``on_step`` runs after every iteration. One progress bar counts the iterations of every scale, and each
    scale ends with one log line. ``dtype`` is the VGG pass's autocast dtype (objective.autocast_dtype).
    """
    device = vgg.mean.device
    prepare_for_device(vgg)
    colors = _Colors(job.color_preservation, content.to(device), [style.to(device) for style in styles])
    height, width = colors.content.shape[-2:]

    def first_image(size_of: torch.Tensor) -> torch.Tensor:
        return colors.start(initial_image(job, size_of, colors.styles, init_image), job.init)

    if job.coarse_iterations == 0:
        yield Final(colors.output(first_image(colors.content)), 0)
        return
    schedule = build_schedule(width, height, job.coarse_iterations, job.pyramid_start)
    total = sum(scale.iterations for scale in schedule)
    image, evaluations, done, losses = None, 0, 0, {}
    # One bar over every scale: a client sees one count rise from 0 to the whole run's iterations.
    with progress_bar(total) as bar:
        for index, scale in enumerate(schedule):
            objective = _scale_objective(vgg, job, colors, scale, dtype)
            start = first_image(objective.content) if image is None else resize_tensor(image, *objective.size)
            optimization = Optimization(objective, start, job.optimizer, job.adam_lr)
            for count in range(1, scale.iterations + 1):
                losses = optimization.step()
                done += 1
                bar.update(1)
                stage = f"scale {index + 1}/{len(schedule)}"
                size = (scale.width, scale.height)
                step = Step(stage, count, scale.iterations, index, len(schedule), done, size, losses)
                if on_step is not None:
                    on_step(step)
                if job.preview_every and done % job.preview_every == 0 and done < total:
                    yield Preview(colors.output(optimization.current()), step)
            image = optimization.current()
            evaluations += optimization.evaluations
            log.info(
                "Scale %d/%d (%dx%d) done: %d iterations, last losses %s",
                index + 1,
                len(schedule),
                scale.width,
                scale.height,
                scale.iterations,
                " ".join(f"{name} {value:.4g}" for name, value in losses.items()),
            )
    yield Final(colors.output(image), evaluations, losses)
