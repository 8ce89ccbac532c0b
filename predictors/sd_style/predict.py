"""Cog predictor: the content image's structure (Canny + ControlNet) in the style image's look (IP-Adapter).

The model family is chosen per deployment with ``TRIPTYCH_SD_FAMILY`` (``sd15``, the default, or ``sdxl``); a
custom base checkpoint comes through ``COG_WEIGHTS`` (a ``.safetensors`` file or a diffusers folder).
"""

from __future__ import annotations

import math
import os
import time

from cog import BasePredictor, Input, Path

from predictors.common import boundary, media, runtime, weights
from predictors.common.errors import InputError
from predictors.common.inputs import load_named_images, parse_blend_weights
from predictors.sd_style.pipeline import Job, StylePipeline, family_spec

FAMILY_ENV = "TRIPTYCH_SD_FAMILY"
DEFAULT_NEGATIVE = "lowres, blurry, deformed, watermark, text, signature, jpeg artifacts, ugly"
SIZE_MULTIPLE = 8  # the VAE's downscale; diffusers' UNets pad odd latent sizes themselves
MIN_SIDE = 64

logger = runtime.get_logger(__name__)


def render_size(
    width: int, height: int, *, max_side: int | None, megapixels: float | None, default_side: int
) -> tuple[int, int]:
    """Scale (up or down) to the requested long side and/or pixel count; aspect kept, sides multiples of 8."""
    scales = []
    if max_side is not None:
        scales.append(max_side / max(width, height))
    if megapixels is not None:
        scales.append(math.sqrt(megapixels * 1e6 / (width * height)))
    scale = min(scales) if scales else default_side / max(width, height)
    limit_side = max(round(width * scale), round(height * scale))
    limit_pixels = None if megapixels is None else int(megapixels * 1e6)
    size = media.fit_size(
        max(1, round(width * scale)),
        max(1, round(height * scale)),
        max_side=limit_side,
        max_pixels=limit_pixels,
        multiple=SIZE_MULTIPLE,
    )
    if min(size) < MIN_SIDE:
        raise InputError(
            f"The output would be {size[0]}x{size[1]} pixels; its short side must be at least {MIN_SIDE}. "
            "Use a larger size or a less elongated image."
        )
    return size


class Predictor(BasePredictor):
    def setup(self) -> None:
        started = time.perf_counter()
        self.family = family_spec(os.environ.get(FAMILY_ENV, "sd15").strip().lower())
        # A custom checkpoint (COG_WEIGHTS) replaces the base weights: gigabytes not downloaded, never read.
        files = weights.ensure(self.family.tag, custom_role="base")
        runtime.configure_threads()
        self.device = runtime.select_device()
        self.pipeline = StylePipeline.load(
            self.family, files, device=self.device, dtype=runtime.select_dtype(self.device)
        )
        self.outputs = media.Outputs()
        logger.info("Loaded %s on %s in %.1f s", self.family.name, self.device, time.perf_counter() - started)

    def healthcheck(self) -> bool:
        return runtime.device_works(self.device)

    @boundary.prediction
    def predict(
        self,
        image: Path = Input(description="The content image: its structure (Canny edges) is kept."),
        style_image: Path = Input(description="The style image: its look is transferred."),
        style_image_2: Path | None = Input(description="An optional second style image.", default=None),
        style_image_3: Path | None = Input(description="An optional third style image.", default=None),
        style_weights: str = Input(
            description="Blend weights of style_image, style_image_2, style_image_3 in that order, comma-separated (e.g. '1,0.5'). Empty: equal weights.",  # noqa: E501
            default="",
        ),
        prompt: str = Input(description="Optional text describing the output; not needed.", default=""),
        negative_prompt: str = Input(
            description="What the output should not show.", default=DEFAULT_NEGATIVE
        ),
        style_strength: float = Input(
            description="IP-Adapter scale on the layers the style mode selects.", default=1.0, ge=0.0, le=2.0
        ),
        structure_strength: float = Input(
            description="ControlNet conditioning scale: how closely the Canny edges are followed.",
            default=0.75,
            ge=0.0,
            le=2.0,
        ),
        style_mode: str = Input(
            description="Where the style is injected: 'style' (style layers only: the style image's content does not leak in), 'style_and_layout' (also its layout), 'full' (every layer).",  # noqa: E501
            default="style",
            choices=["style", "style_and_layout", "full"],
        ),
        denoise_strength: float = Input(
            description="1.0 generates under the edge control; below 1.0 starts from the image (img2img), keeping more of its colours the lower it is.",  # noqa: E501
            default=1.0,
            ge=0.05,
            le=1.0,
        ),
        canny_low: int = Input(description="Canny lower threshold.", default=100, ge=0, le=254),
        canny_high: int = Input(description="Canny upper threshold.", default=200, ge=1, le=255),
        num_inference_steps: int | None = Input(
            description="Denoising steps. Empty: 20, or 4 with turbo.", default=None, ge=1, le=100
        ),
        guidance_scale: float | None = Input(
            description="Classifier-free guidance scale; 1.0 turns guidance (and the negative prompt) off. Empty: 6.0, or 1.0 with turbo.",  # noqa: E501
            default=None,
            ge=1.0,
            le=20.0,
        ),
        scheduler: str = Input(
            description="Sampler (turbo always uses the LCM scheduler its LoRA was distilled for).",
            default="DPM++ 2M Karras",
            choices=["DPM++ 2M Karras", "Euler a", "UniPC", "DDIM"],
        ),
        num_outputs: int = Input(description="Number of images.", default=1, ge=1, le=4),
        seed: int | None = Input(description="Random seed; empty picks one (see the logs).", default=None),
        max_side: int | None = Input(
            description="Long side of the output in pixels (aspect kept, multiple of 8). Empty: 768 (SD1.5) or 1024 (SDXL), unless megapixels is set.",  # noqa: E501
            default=None,
            ge=256,
            le=2048,
        ),
        megapixels: float | None = Input(
            description="Output size in megapixels (aspect kept); with max_side, the smaller result wins.",
            default=None,
            ge=0.06,
            le=4.2,
        ),
        detail_pass: bool = Input(
            description="Add a short detail pass (tile ControlNet on SD1.5; the Canny ControlNet on SDXL).",
            default=False,
        ),
        turbo: bool = Input(
            description="Few-step mode: the family's LCM-LoRA (fused at setup) with the LCM scheduler, 4 steps at guidance 1.0 unless set; several times faster, a little less detail. Structure and style inputs apply as usual.",  # noqa: E501
            default=False,
        ),
        output_format: str = Input(
            description="Image format.", default="webp", choices=["webp", "jpg", "png"]
        ),
        output_quality: int = Input(description="Quality of webp/jpg outputs.", default=90, ge=1, le=100),
        disable_safety_checker: bool = Input(
            description="Skip the safety checker (outputs it flags are otherwise withheld).", default=False
        ),
        return_control_image: bool = Input(
            description="Also return the Canny edge map the structure follows, as a PNG after the images, to tune canny_low and canny_high by eye.",  # noqa: E501
            default=False,
        ),
    ) -> list[Path]:
        """Long only by its signature, which is the API (one Input each); the body maps inputs to a Job."""
        self.outputs.start()
        content = media.load_image(image, what="image")
        style_images = load_named_images(
            style_image=style_image, style_image_2=style_image_2, style_image_3=style_image_3
        )
        size = render_size(
            *content.size, max_side=max_side, megapixels=megapixels, default_side=self.family.default_max_side
        )
        job = Job(
            image=media.resize(content, size),
            style_images=style_images,
            style_weights=parse_blend_weights(style_weights, len(style_images)),
            prompt=prompt,
            negative_prompt=negative_prompt,
            style_strength=style_strength,
            structure_strength=structure_strength,
            style_mode=style_mode,
            denoise_strength=denoise_strength,
            canny_low=canny_low,
            canny_high=canny_high,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            scheduler=scheduler,
            num_outputs=num_outputs,
            seed=runtime.resolve_seed(seed, logger),
            detail_pass=detail_pass,
            turbo=turbo,
        )
        with runtime.oom_guard("Lower max_side, megapixels or num_outputs."):
            images = self.pipeline.run(job)
        kept = images if disable_safety_checker else self._withhold_flagged(images)
        paths = [
            self.outputs.save_image(i, f"sd-style-{job.seed}", output_format, output_quality) for i in kept
        ]
        if return_control_image:
            # PNG whatever output_format says: a lossy codec would blur the one-pixel edges.
            paths.append(self.outputs.save_image(job.control_image(), "control-canny", "png"))
        return [Path(path) for path in paths]

    def _withhold_flagged(self, images):
        flags = self.pipeline.flag_unsafe(images)
        for index, flagged in enumerate(flags):
            if flagged:
                logger.warning("Output %d was flagged by the safety checker and is withheld.", index + 1)
        kept = [image for image, flagged in zip(images, flags, strict=True) if not flagged]
        if not kept:
            raise InputError(
                f"All {len(images)} output(s) were flagged as possibly NSFW by the safety checker and "
                "withheld. Try another seed, prompt or style image, or set disable_safety_checker."
            )
        return kept
