"""The style-transfer job, Cog-free: check the inputs, run the fast start and the optimization, yield
pictures. ``predict.py`` maps the API's inputs onto ``Job`` (same names) and saves what ``run`` yields.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import torch
from PIL import Image

from predictors.common import media, runtime
from predictors.common.errors import InputError
from predictors.common.inputs import check_blend_weights
from predictors.nst.color import COLOR_PRESERVATIONS
from predictors.nst.fast_start import FastStylizer
from predictors.nst.objective import (
    CONTENT_LAYER,
    PRECISIONS,
    STYLE_LAYER_WEIGHTS,
    STYLE_LAYERS,
    autocast_dtype,
    style_size,
)
from predictors.nst.optimize import (
    ADAM_LR,
    PYRAMID_START,
    Final,
    Preview,
    iterate,
    to_image,
    to_tensor,
)
from predictors.nst.vgg import PADDINGS, POOLINGS, VGGFeatures

QUALITY_ITERATIONS = {"draft": 100, "standard": 300, "high": 600}
OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise", "style", "fast")
MAX_STYLES = 3
# Sides are multiples of 16 so that relu5_1 (after four 2x2 poolings) has at least one pixel.
SIDE_MULTIPLE = 16

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One stylization, under the API's input names; the values are the API's (no defaults here: they live
    in the ``Input`` declarations). The last three fields are tuning knobs no input exposes."""

    style_weights: tuple[float, ...]
    style_strength: float
    content_weight: float
    tv_weight: float
    quality: str
    iterations: int | None
    optimizer: str
    init: str
    color_preservation: str
    style_scale: float
    pooling: str
    padding: str
    precision: str
    seed: int
    preview_every: int
    style_layer_weights: tuple[float, ...] = STYLE_LAYER_WEIGHTS
    adam_lr: float = ADAM_LR
    pyramid_start: int = PYRAMID_START

    @property
    def coarse_iterations(self) -> int:
        """``iterations`` when given, else the ``quality`` preset: the coarsest scale's iteration count."""
        return QUALITY_ITERATIONS[self.quality] if self.iterations is None else self.iterations


def _choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(choices)}, got {value!r}.")


def check(job: Job, styles: int) -> None:
    """Every rule a job must meet with ``styles`` style images, as InputError sentences (the one place)."""
    if not 1 <= styles <= MAX_STYLES:
        raise InputError(f"Give one to {MAX_STYLES} style images, not {styles}.")
    check_blend_weights(job.style_weights, styles)
    for name, value, choices in (
        ("quality", job.quality, tuple(QUALITY_ITERATIONS)),
        ("optimizer", job.optimizer, OPTIMIZERS),
        ("init", job.init, INITS),
        ("color_preservation", job.color_preservation, COLOR_PRESERVATIONS),
        ("pooling", job.pooling, POOLINGS),
        ("padding", job.padding, PADDINGS),
        ("precision", job.precision, PRECISIONS),
    ):
        _choice(name, value, choices)
    for name, value in (
        ("style_strength", job.style_strength),
        ("content_weight", job.content_weight),
        ("tv_weight", job.tv_weight),
        ("preview_every", job.preview_every),
        ("iterations", 0 if job.iterations is None else job.iterations),
    ):
        if not value >= 0:
            raise InputError(f"{name} must be 0 or more, got {value}.")
    if not job.style_scale > 0:
        raise InputError(f"style_scale must be more than 0, got {job.style_scale}.")
    if len(job.style_layer_weights) != len(STYLE_LAYERS) or sum(job.style_layer_weights) <= 0:
        raise InputError(f"style_layer_weights needs {len(STYLE_LAYERS)} values, one per {STYLE_LAYERS}.")


def output_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """The output (width, height) for an image of ``size``: long side at most ``max_side``, aspect kept,
    sides multiples of 16."""
    return media.fit_size(*size, max_side=max_side, multiple=SIDE_MULTIPLE)


def _shrink_to_use(style: Image.Image, size: tuple[int, int], style_scale: float) -> Image.Image:
    """The style at the largest size the optimization uses it (the finest scale's), when that is smaller:
    a larger one only costs memory. Each scale then resizes it in ``style_targets``."""
    used = style_size(style.size, size, style_scale)
    return media.resize(style, used) if used[0] < style.width else style


class StyleTransfer:
    """The models of the job (VGG19 built per pooling and padding on first use, the fast start) and ``run``.

    ``vgg_state`` None: only the fast start (init "fast" with 0 iterations) can run."""

    def __init__(
        self, vgg_state: dict[str, torch.Tensor] | None, fast: FastStylizer, device: torch.device
    ) -> None:
        # Style transfer uses only the convolutions; the classifier (about 0.5 GB) is not kept.
        self.vgg_state = {k: v for k, v in (vgg_state or {}).items() if k.startswith("features.")}
        self.fast = fast
        self.device = device
        self._features: dict[tuple[str, str], VGGFeatures] = {}

    def features(self, pooling: str, padding: str) -> VGGFeatures:
        key = (pooling, padding)
        if key not in self._features:
            model = VGGFeatures(
                self.vgg_state, (*STYLE_LAYERS, CONTENT_LAYER), pooling=pooling, padding=padding
            )
            self._features[key] = model.to(self.device)
        return self._features[key]

    def run(self, job: Job, image: Image.Image, styles: Sequence[Image.Image]) -> Iterator[Preview | Final]:
        """Stylize ``image`` (already at the output size) with ``styles``: yields Previews, then the Final,
        with PIL images."""
        check(job, len(styles))
        dtype = autocast_dtype(job.precision, self.device)
        styles = [_shrink_to_use(style, image.size, job.style_scale) for style in styles]
        init_image = None
        if job.init == "fast":
            started = time.process_time()
            fast = self.fast.stylize(
                image, styles, job.style_weights, color_preservation=job.color_preservation
            )
            log.info("Fast start (feed-forward) in %.2f s of CPU time", time.process_time() - started)
            if job.coarse_iterations == 0:
                yield Final(fast, 0)
                return
            if job.preview_every:
                yield Preview(fast, None)
            init_image = to_tensor(fast)
        log.info(
            "Stylizing %dx%d with %d style(s), %d iteration(s) at the coarsest scale, %s, VGG pass in %s",
            *image.size, len(styles), job.coarse_iterations, job.optimizer, str(dtype).removeprefix("torch."),
        )  # fmt: skip
        with runtime.oom_guard("Lower max_side, or use fewer style images."):
            events = iterate(
                self.features(job.pooling, job.padding),
                to_tensor(image),
                [to_tensor(style) for style in styles],
                job,
                init_image=init_image,
                dtype=dtype,
            )
            for event in events:
                yield replace(event, image=to_image(event.image))
