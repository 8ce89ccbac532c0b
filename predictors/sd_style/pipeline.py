"""Structure from Canny edges (ControlNet) and look from a style image (IP-Adapter), assembled from diffusers.

``StylePipeline.load`` builds, once, the ControlNet txt2img pipeline of a family (SD1.5 or SDXL) from local
weights folders, loads the IP-Adapter into it and derives the img2img and detail-pass pipelines from the same
modules (``from_pipe``), so nothing is loaded twice. ``run`` renders one job; style images are embedded once
per content hash and blended by weight into precomputed IP-Adapter embeddings.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from predictors.common.errors import InputError, WeightsError
from predictors.common.runtime import progress_bar
from predictors.common.weights import Weights
from predictors.sd_style.blocks import STYLE_MODES, adapter_scale

SCHEDULERS = ("DPM++ 2M Karras", "Euler a", "UniPC", "DDIM")
DETAIL_STRENGTH = 0.35
EMBEDDING_CACHE_SIZE = 32

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Family:
    """A family's parts by their folder names in the weights manifest, and how diffusers loads them."""

    name: str
    base: str
    canny: str
    tile: str | None
    ip_adapter_subfolder: str
    ip_adapter_weight: str
    image_encoder_folder: str
    safety_checker: str
    feature_extractor: str
    default_max_side: int

    @property
    def tag(self) -> str:
        return f"sd_style/{self.name}"


FAMILIES = {
    "sd15": Family(
        name="sd15",
        base="sd15_base",
        canny="control_v11p_sd15_canny",
        tile="control_v11f1e_sd15_tile",
        ip_adapter_subfolder="models",
        ip_adapter_weight="ip-adapter_sd15.safetensors",
        image_encoder_folder="image_encoder",
        safety_checker="sd15_safety_checker",
        feature_extractor="sd15_feature_extractor",
        default_max_side=768,
    ),
    "sdxl": Family(
        name="sdxl",
        base="sdxl_base",
        canny="controlnet-canny-sdxl-1.0",
        tile=None,
        ip_adapter_subfolder="sdxl_models",
        ip_adapter_weight="ip-adapter_sdxl_vit-h.safetensors",
        # The ViT-H variant of the SDXL adapter shares the SD1.5 adapter's image encoder.
        image_encoder_folder="models/image_encoder",
        safety_checker="sd15_safety_checker",
        feature_extractor="sd15_feature_extractor",
        default_max_side=1024,
    ),
}
IP_ADAPTER = "ip_adapter"


def family_spec(name: str) -> Family:
    if name not in FAMILIES:
        raise WeightsError(f"Unknown model family {name!r}: set TRIPTYCH_SD_FAMILY to sd15 or sdxl.")
    return FAMILIES[name]


def _pipeline_classes(family: str):
    import diffusers

    if family == "sdxl":
        return (
            diffusers.StableDiffusionXLControlNetPipeline,
            diffusers.StableDiffusionXLControlNetImg2ImgPipeline,
        )
    return diffusers.StableDiffusionControlNetPipeline, diffusers.StableDiffusionControlNetImg2ImgPipeline


def make_scheduler(name: str, config):
    """A fresh scheduler of the named kind, built from the base model's scheduler config."""
    import diffusers

    if name == "DPM++ 2M Karras":
        return diffusers.DPMSolverMultistepScheduler.from_config(
            config, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True
        )
    if name == "Euler a":
        return diffusers.EulerAncestralDiscreteScheduler.from_config(config)
    if name == "UniPC":
        return diffusers.UniPCMultistepScheduler.from_config(config)
    if name == "DDIM":
        return diffusers.DDIMScheduler.from_config(config)
    raise ValueError(f"unknown scheduler {name!r}; expected one of {', '.join(SCHEDULERS)}")


def denoising_steps(steps: int, strength: float) -> int:
    """The steps diffusers runs for ``steps`` at ``strength``: all in txt2img, ``int(steps * strength)`` in
    img2img (``get_timesteps`` of its img2img pipelines; every scheduler of SCHEDULERS has order 1)."""
    return steps if strength >= 1.0 else min(int(steps * strength), steps)


def detail_inference_steps(steps: int) -> int:
    """``num_inference_steps`` of the detail pass: img2img at DETAIL_STRENGTH must keep at least one step."""
    return max(steps, math.ceil(1 / DETAIL_STRENGTH))


def planned_steps(job: Job) -> dict[str, int]:
    """The denoising steps of each pass of ``job``, in order: "main", then "detail" when it is asked for."""
    passes = {"main": denoising_steps(job.num_inference_steps, job.denoise)}
    if job.detail_pass:
        passes["detail"] = denoising_steps(detail_inference_steps(job.num_inference_steps), DETAIL_STRENGTH)
    return passes


def canny_edges(image: Image.Image, low: int, high: int) -> Image.Image:
    """The Canny edge map of ``image`` as a 3-channel image, the control input of the canny ControlNets."""
    if not 0 <= low < high <= 255:
        raise InputError(
            f"The Canny thresholds must satisfy 0 <= low < high <= 255; got low={low}, high={high}."
        )
    gray = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(gray, low, high)
    return Image.fromarray(np.stack([edges] * 3, axis=-1))


def image_digest(image: Image.Image) -> str:
    """Content hash of the decoded pixels (so the same picture in another file format hits the cache too)."""
    rgb = image.convert("RGB")
    digest = hashlib.sha256(f"{rgb.size}".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()


@dataclass
class Job:
    """One rendering request, already validated and resized (content image at the output size)."""

    content: Image.Image
    style_images: list[Image.Image]
    style_weights: list[float] | None = None
    prompt: str = ""
    negative_prompt: str = ""
    style_strength: float = 1.0
    structure_strength: float = 0.75
    style_mode: str = "style"
    denoise: float = 1.0
    canny_low: int = 100
    canny_high: int = 200
    num_inference_steps: int = 20
    guidance_scale: float = 6.0
    scheduler: str = "DPM++ 2M Karras"
    num_outputs: int = 1
    seed: int = 0
    detail_pass: bool = False

    def control_image(self) -> Image.Image:
        """The Canny edge map the canny ControlNet is conditioned on."""
        return canny_edges(self.content, self.canny_low, self.canny_high)


StepCallback = Callable[[str, int, int], None]


class StylePipeline:
    """A loaded family: the txt2img, img2img and detail pipelines sharing one set of modules."""

    def __init__(self, family: Family, txt2img, img2img, detail, safety_checker, feature_extractor):
        self.family = family
        self.txt2img = txt2img
        self.img2img = img2img
        self.detail = detail
        self.safety_checker = safety_checker
        self.safety_feature_extractor = feature_extractor
        self._scheduler_config = txt2img.scheduler.config
        self._embeddings: OrderedDict[str, torch.Tensor] = OrderedDict()
        for pipe in (txt2img, img2img, detail):
            pipe.set_progress_bar_config(disable=True)

    @property
    def device(self) -> torch.device:
        return self.txt2img.device

    @classmethod
    def load(
        cls,
        family: Family,
        files: Weights,
        *,
        device: torch.device,
        dtype: torch.dtype,
    ) -> StylePipeline:
        """Load every part of ``family`` from the folders ``files`` names (no Hub access).

        ``files.custom`` replaces the base model: a single-file ``.safetensors`` checkpoint (read with the
        family's own configs and tokenizers) or a diffusers folder.
        """
        from diffusers import ControlNetModel
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        txt2img_cls, img2img_cls = _pipeline_classes(family.name)
        # fp16 variant files serve both fp16 (GPU) and fp32 (CPU) runs: diffusers upcasts on load.
        common = {"dtype": dtype, "variant": "fp16", "local_files_only": True}
        canny = ControlNetModel.from_pretrained(files.folder(family.canny), **common)
        base_parts = {"controlnet": canny}
        if family.name == "sd15":
            base_parts |= {"safety_checker": None, "requires_safety_checker": False}
        txt2img = _load_base(txt2img_cls, files.folder(family.base), files.custom, base_parts, common)
        txt2img.load_ip_adapter(
            str(files.folder(IP_ADAPTER)),
            subfolder=family.ip_adapter_subfolder,
            weight_name=family.ip_adapter_weight,
            image_encoder_folder=family.image_encoder_folder,
            local_files_only=True,
        )
        txt2img.to(device)
        img2img = img2img_cls.from_pipe(txt2img)
        if family.tile is not None:
            tile = ControlNetModel.from_pretrained(files.folder(family.tile), **common).to(device)
            detail = img2img_cls.from_pipe(txt2img, controlnet=tile)
        else:
            detail = img2img
        safety_checker = StableDiffusionSafetyChecker.from_pretrained(
            files.folder(family.safety_checker), dtype=dtype, variant="fp16", local_files_only=True
        ).to(device)
        feature_extractor = CLIPImageProcessor.from_pretrained(files.folder(family.feature_extractor))
        if device.type == "cuda":
            # Convolutions run faster channels-last on GPUs (diffusers' advice); SDPA is already the default.
            for module in {id(m): m for m in (txt2img.unet, txt2img.controlnet, detail.controlnet)}.values():
                module.to(memory_format=torch.channels_last)
        return cls(family, txt2img, img2img, detail, safety_checker, feature_extractor)

    # Style embeddings -------------------------------------------------------------------------------

    def style_embedding(self, image: Image.Image) -> torch.Tensor:
        """The IP-Adapter image embedding of ``image`` ([1, dim]); the image encoder runs once per content."""
        key = image_digest(image)
        cached = self._embeddings.get(key)
        if cached is not None:
            self._embeddings.move_to_end(key)
            return cached
        with torch.inference_mode():
            embedding, _ = self.txt2img.encode_image(image, self.device, 1, output_hidden_states=False)
        self._embeddings[key] = embedding
        while len(self._embeddings) > EMBEDDING_CACHE_SIZE:
            self._embeddings.popitem(last=False)
        return embedding

    def adapter_embeds(self, images: list[Image.Image], weights: list[float] | None, guidance: float):
        """Precomputed ``ip_adapter_image_embeds``: the weighted mean of the style embeddings.

        Laid out as diffusers lays out what it computes from ``ip_adapter_image`` itself ([negative, positive]
        stacked when classifier-free guidance is on), so one style image gives exactly the stock result.
        """
        if not images:
            raise InputError("At least one style image is needed.")
        weights = [1.0] * len(images) if weights is None else list(weights)
        if len(weights) != len(images):
            raise InputError(
                f"Got {len(weights)} style weights for {len(images)} style images; give one each."
            )
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise InputError("Style weights must be zero or positive, with a positive sum.")
        embeddings = [self.style_embedding(image) for image in images]
        if len(embeddings) == 1:
            blended = embeddings[0]
        else:
            total = sum(weights)
            blended = sum(w / total * e for w, e in zip(weights, embeddings, strict=True))
        positive = blended[None, :]
        if guidance > 1.0:
            return [torch.cat([torch.zeros_like(positive), positive])]
        return [positive]

    # Rendering --------------------------------------------------------------------------------------

    def _step_callback(self, stage: str, on_step: StepCallback | None, bar):
        def callback(pipe, step: int, timestep, callback_kwargs: dict) -> dict:
            # Cog cancels by raising in this thread; nothing here may catch it.
            bar.update(1)
            if on_step is not None:
                on_step(stage, step + 1, pipe.num_timesteps)
            return callback_kwargs

        return callback

    def call_arguments(self, job: Job) -> dict:
        """The keyword arguments of the diffusers call for the main pass, besides the adapter embeddings."""
        width, height = job.content.size
        control = job.control_image()
        arguments = {
            "prompt": job.prompt,
            "negative_prompt": job.negative_prompt or None,
            "num_inference_steps": job.num_inference_steps,
            "guidance_scale": job.guidance_scale,
            "controlnet_conditioning_scale": job.structure_strength,
            "num_images_per_prompt": job.num_outputs,
            "height": height,
            "width": width,
        }
        if job.denoise < 1.0:
            arguments |= {"image": job.content, "control_image": control, "strength": job.denoise}
        else:
            arguments |= {"image": control}
        return arguments

    def prepare(self, job: Job):
        """Pick the pipeline for ``job``, with a fresh scheduler and the adapter scales of its style mode."""
        if job.style_mode not in STYLE_MODES:
            raise InputError(f"Unknown style mode {job.style_mode!r}; use one of {', '.join(STYLE_MODES)}.")
        if not 0.0 < job.denoise <= 1.0:
            raise InputError(f"Denoise strength must be in (0, 1]; got {job.denoise}.")
        # diffusers' img2img runs int(steps * strength) steps and fails obscurely on zero.
        steps = job.num_inference_steps
        if denoising_steps(steps, job.denoise) < 1:
            raise InputError(
                f"With denoise_strength {job.denoise}, {steps} step(s) leave no img2img step to run: "
                f"use num_inference_steps {math.ceil(1 / job.denoise)} or more, or a higher denoise_strength."
            )
        pipe = self.txt2img if job.denoise >= 1.0 else self.img2img
        pipe.scheduler = make_scheduler(job.scheduler, self._scheduler_config)
        pipe.set_ip_adapter_scale(adapter_scale(self.family.name, job.style_mode, job.style_strength))
        return pipe

    def run(self, job: Job, *, on_step: StepCallback | None = None, output_type: str = "pil"):
        """Render ``job``; returns ``num_outputs`` images (PIL, or float arrays in [0, 1] for ``"np"``).

        One progress bar counts the steps of every pass (diffusers' own bars are off), and each pass ends
        with one log line. ``on_step(stage, step, steps)`` runs after every step.
        """
        pipe = self.prepare(job)
        embeds = self.adapter_embeds(job.style_images, job.style_weights, job.guidance_scale)
        generator = torch.Generator(device="cpu").manual_seed(job.seed)
        main_type = "pil" if job.detail_pass else output_type
        passes = planned_steps(job)
        with torch.inference_mode(), progress_bar(sum(passes.values()), unit="step") as bar:
            started = time.perf_counter()
            images = pipe(
                **self.call_arguments(job),
                ip_adapter_image_embeds=embeds,
                generator=generator,
                output_type=main_type,
                callback_on_step_end=self._step_callback("main", on_step, bar),
            ).images
            log.info("Main pass done: %d steps in %.1f s", passes["main"], time.perf_counter() - started)
            if job.detail_pass:
                started = time.perf_counter()
                images = self._detail_pass(job, images, embeds, generator, on_step, bar, output_type)
                log.info(
                    "Detail pass done: %d steps in %.1f s", passes["detail"], time.perf_counter() - started
                )
        return images

    def _detail_pass(self, job: Job, images, embeds, generator, on_step, bar, output_type):
        """A short img2img pass over the outputs: tile ControlNet on SD1.5, the canny control on SDXL."""
        count = len(images)
        self.detail.scheduler = make_scheduler(job.scheduler, self._scheduler_config)
        width, height = job.content.size
        control = images if self.family.tile is not None else [job.control_image()] * count
        # One [negative, positive] pair per output: the batch here is the outputs, not one prompt.
        batch_embeds = [
            torch.cat([half.repeat(count, 1, 1) for half in embed.chunk(embed.shape[0])]) for embed in embeds
        ]
        return self.detail(
            prompt=[job.prompt] * count,
            negative_prompt=[job.negative_prompt] * count if job.negative_prompt else None,
            image=images,
            control_image=control,
            strength=DETAIL_STRENGTH,
            num_inference_steps=detail_inference_steps(job.num_inference_steps),
            guidance_scale=job.guidance_scale,
            controlnet_conditioning_scale=1.0 if self.family.tile is not None else job.structure_strength,
            height=height,
            width=width,
            ip_adapter_image_embeds=batch_embeds,
            generator=generator,
            output_type=output_type,
            callback_on_step_end=self._step_callback("detail", on_step, bar),
        ).images

    def flag_unsafe(self, images: list[Image.Image]) -> list[bool]:
        """The safety checker's verdict per image (True: flagged as possibly NSFW)."""
        clip_input = self.safety_feature_extractor(images, return_tensors="pt").pixel_values
        clip_input = clip_input.to(self.device, dtype=self.safety_checker.dtype)
        arrays = [np.asarray(image, dtype=np.float32) / 255.0 for image in images]
        with torch.inference_mode():
            _, flags = self.safety_checker(images=arrays, clip_input=clip_input)
        return [bool(flag) for flag in flags]


def _load_base(pipeline_cls, base_dir: Path, custom_base, parts: dict, common: dict):
    if custom_base is None:
        return pipeline_cls.from_pretrained(base_dir, **parts, **common)
    custom = Path(custom_base)
    if custom.is_dir():
        # A user's folder may hold the fp16 variant files or only the full-precision ones.
        has_fp16 = (custom / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
        variant = "fp16" if has_fp16 else None
        return pipeline_cls.from_pretrained(custom, **parts, **{**common, "variant": variant})
    if custom.is_file() and custom.suffix == ".safetensors":
        log.info("loading the base model from the single-file checkpoint %s", custom)
        return pipeline_cls.from_single_file(
            str(custom), config=str(base_dir), dtype=common["dtype"], local_files_only=True, **parts
        )
    raise WeightsError(
        f"The custom checkpoint {custom_base} is neither a .safetensors file nor a diffusers folder: "
        "point COG_WEIGHTS at one of those."
    )
