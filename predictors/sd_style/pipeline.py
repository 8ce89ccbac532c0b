"""Structure from Canny edges (ControlNet) and look from a style image (IP-Adapter), assembled from diffusers.

``StylePipeline.load`` builds, once, the ControlNet txt2img pipeline of a family (SD1.5 or SDXL) from local
weights folders, loads the IP-Adapter into it and derives the img2img and detail-pass pipelines from the same
modules (``from_pipe``), so nothing is loaded twice. It also builds the turbo passes: the same pipelines on a
second UNet with the family's LCM-LoRA fused into it. ``run`` renders one job; style images are embedded once
per content hash and blended by weight into precomputed IP-Adapter embeddings.

Turbo keeps two UNet states side by side rather than fusing and unfusing the LoRA per request: a request then
costs the same whichever mode came before it, and no fp16 round trip (fuse, unfuse) drifts the base weights
over the life of the process. The price is memory: one more UNet (1.7 GB in fp16 for SD1.5, 5.1 GB for SDXL),
well within the GPUs these models are served on. An unfused LoRA would cost every turbo step its extra
matrix products instead.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from predictors.common.errors import InputError, WeightsError
from predictors.common.inputs import check_blend_weights
from predictors.common.runtime import Progress, StepCallback, progress_bar
from predictors.common.weights import Weights
from predictors.sd_style.ip_adapter_layers import STYLE_MODES, adapter_scale

SCHEDULERS = ("DPM++ 2M Karras", "Euler a", "UniPC", "DDIM")
DETAIL_STRENGTH = 0.35
EMBEDDING_CACHE_SIZE = 32
# What an empty num_inference_steps / guidance_scale means, per mode. LCM-LoRA's authors recommend 2-8 steps
# at guidance 1-2; at 1.0 diffusers skips classifier-free guidance, so a turbo step is one UNet row, not two
# (the negative prompt then has no effect).
DEFAULT_STEPS, DEFAULT_GUIDANCE = 20, 6.0
TURBO_STEPS, TURBO_GUIDANCE = 4, 1.0
TURBO_LORA_WEIGHT = "pytorch_lora_weights.safetensors"

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
    turbo_lora: str
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
        turbo_lora="lcm-lora-sdv1-5",
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
        turbo_lora="lcm-lora-sdxl",
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


def make_scheduler(name: str, config, *, turbo: bool = False):
    """A fresh scheduler of the named kind, built from the base model's scheduler config; with ``turbo``,
    the LCM scheduler the LCM-LoRA was distilled for, whatever ``name`` says."""
    import diffusers

    if turbo:
        return diffusers.LCMScheduler.from_config(config)
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
    passes = {"main": denoising_steps(job.steps, job.denoise_strength)}
    if job.detail_pass:
        passes["detail"] = denoising_steps(detail_inference_steps(job.steps), DETAIL_STRENGTH)
    return passes


def canny_edges(image: Image.Image, low: int, high: int) -> Image.Image:
    """The Canny edge map of ``image`` as a 3-channel image, the control input of the canny ControlNets
    (thresholds as ``Job.check`` accepts them)."""
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
    """One rendering request, named as the API names its inputs; the predictor has resized ``image`` (the
    content image) to the output size. ``style_images`` holds style_image, style_image_2 and style_image_3,
    those given, in order; ``style_weights`` None means equal weights. ``num_inference_steps`` and
    ``guidance_scale`` None take the mode's values (DEFAULT_* or TURBO_*)."""

    image: Image.Image
    style_images: list[Image.Image]
    style_weights: list[float] | None
    prompt: str
    negative_prompt: str
    style_strength: float
    structure_strength: float
    style_mode: str
    denoise_strength: float
    canny_low: int
    canny_high: int
    num_inference_steps: int | None
    guidance_scale: float | None
    scheduler: str
    num_outputs: int
    seed: int
    detail_pass: bool
    turbo: bool

    @property
    def steps(self) -> int:
        if self.num_inference_steps is not None:
            return self.num_inference_steps
        return TURBO_STEPS if self.turbo else DEFAULT_STEPS

    @property
    def guidance(self) -> float:
        if self.guidance_scale is not None:
            return self.guidance_scale
        return TURBO_GUIDANCE if self.turbo else DEFAULT_GUIDANCE

    def check(self) -> None:
        """Raise InputError, naming the input, for any value this job cannot run with (diffusers'
        ``check_inputs`` rule: one place, before any work)."""
        if self.style_mode not in STYLE_MODES:
            raise InputError(f"Unknown style_mode {self.style_mode!r}; use one of {', '.join(STYLE_MODES)}.")
        if self.scheduler not in SCHEDULERS:
            raise InputError(f"Unknown scheduler {self.scheduler!r}; use one of {', '.join(SCHEDULERS)}.")
        if not 0 <= self.canny_low < self.canny_high <= 255:
            raise InputError(
                f"canny_low ({self.canny_low}) must be below canny_high ({self.canny_high}), both in 0-255."
            )
        if not 0.0 < self.denoise_strength <= 1.0:
            raise InputError(f"denoise_strength must be in (0, 1]; got {self.denoise_strength}.")
        self._check_style_weights()
        # diffusers' img2img runs int(steps * strength) steps and fails obscurely on zero.
        if self.steps < 1 or denoising_steps(self.steps, self.denoise_strength) < 1:
            raise InputError(
                f"With denoise_strength {self.denoise_strength}, {self.steps} step(s) leave no img2img "
                f"step to run: use num_inference_steps {math.ceil(1 / self.denoise_strength)} or more, or a "
                "higher denoise_strength."
            )

    def _check_style_weights(self) -> None:
        if not self.style_images:
            raise InputError("At least one style image is needed.")
        if self.style_weights is None:
            return
        check_blend_weights(self.style_weights, len(self.style_images))

    def control_image(self) -> Image.Image:
        """The Canny edge map the canny ControlNet is conditioned on."""
        return canny_edges(self.image, self.canny_low, self.canny_high)


@dataclass(frozen=True)
class Passes:
    """The pipelines of one UNet state, sharing every module: txt2img, img2img and the detail pass."""

    txt2img: object
    img2img: object
    detail: object


class StylePipeline:
    """A loaded family: the default and turbo passes, the safety checker and the style-embedding cache."""

    def __init__(self, family: Family, default: Passes, turbo: Passes, safety_checker, feature_extractor):
        self.family = family
        self.default = default
        self.turbo = turbo
        self.safety_checker = safety_checker
        self.safety_feature_extractor = feature_extractor
        self._scheduler_config = default.txt2img.scheduler.config
        self._embeddings: OrderedDict[str, torch.Tensor] = OrderedDict()
        for passes in (default, turbo):
            for pipe in (passes.txt2img, passes.img2img, passes.detail):
                pipe.set_progress_bar_config(disable=True)

    @property
    def txt2img(self):
        """The default txt2img pipeline, whose modules (but the turbo UNet) every pass shares."""
        return self.default.txt2img

    @property
    def img2img(self):
        return self.default.img2img

    @property
    def detail(self):
        return self.default.detail

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

        txt2img_cls, _ = _pipeline_classes(family.name)
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
        tile = None
        if family.tile is not None:
            tile = ControlNetModel.from_pretrained(files.folder(family.tile), **common).to(device)
        default = _passes(family, txt2img, tile)
        turbo = _passes(family, _turbo_txt2img(txt2img, files.folder(family.turbo_lora)), tile)
        safety_checker = StableDiffusionSafetyChecker.from_pretrained(
            files.folder(family.safety_checker), dtype=dtype, variant="fp16", local_files_only=True
        ).to(device)
        feature_extractor = CLIPImageProcessor.from_pretrained(files.folder(family.feature_extractor))
        if device.type == "cuda":
            # Convolutions run faster channels-last on GPUs (diffusers' advice); SDPA is already the default.
            modules = [p.unet for p in (default, turbo)] + [txt2img.controlnet, default.detail.controlnet]
            for module in {id(m): m for m in modules}.values():
                module.to(memory_format=torch.channels_last)
        return cls(family, default, turbo, safety_checker, feature_extractor)

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
        """Precomputed ``ip_adapter_image_embeds``: the weighted mean of the style embeddings (weights as
        ``Job.check`` accepts them).

        Laid out as diffusers lays out what it computes from ``ip_adapter_image`` itself ([negative, positive]
        stacked when classifier-free guidance is on), so one style image gives exactly the stock result.
        """
        embeddings = [self.style_embedding(image) for image in images]
        if len(embeddings) == 1:
            blended = embeddings[0]
        else:
            weights = [1.0] * len(images) if weights is None else weights
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
                on_step(Progress(stage, step + 1, pipe.num_timesteps))
            return callback_kwargs

        return callback

    def call_arguments(self, job: Job) -> dict:
        """The keyword arguments of the diffusers call for the main pass, besides the adapter embeddings."""
        width, height = job.image.size
        control = job.control_image()
        arguments = {
            "prompt": job.prompt,
            "negative_prompt": job.negative_prompt or None,
            "num_inference_steps": job.steps,
            "guidance_scale": job.guidance,
            "controlnet_conditioning_scale": job.structure_strength,
            "num_images_per_prompt": job.num_outputs,
            "height": height,
            "width": width,
        }
        if job.denoise_strength < 1.0:
            arguments |= {"image": job.image, "control_image": control, "strength": job.denoise_strength}
        else:
            arguments |= {"image": control}
        return arguments

    def prepare(self, job: Job):
        """Check ``job``, pick its pipeline, set a fresh scheduler and its style mode's adapter scales."""
        job.check()
        passes = self.turbo if job.turbo else self.default
        pipe = passes.txt2img if job.denoise_strength >= 1.0 else passes.img2img
        pipe.scheduler = make_scheduler(job.scheduler, self._scheduler_config, turbo=job.turbo)
        pipe.set_ip_adapter_scale(adapter_scale(self.family.name, job.style_mode, job.style_strength))
        return pipe

    def run(self, job: Job, *, on_step: StepCallback | None = None, output_type: str = "pil"):
        """Render ``job``; returns ``num_outputs`` images (PIL, or float arrays in [0, 1] for ``"np"``).

        One progress bar counts the steps of every pass (diffusers' own bars are off), and each pass ends
        with one log line. ``on_step`` gets a ``Progress`` after every step.
        """
        pipe = self.prepare(job)
        passes = planned_steps(job)
        sampler = "LCM, turbo" if job.turbo else job.scheduler
        log.info(
            "Rendering %d image(s) at %dx%d: %s steps (%s)", job.num_outputs, *job.image.size, passes, sampler
        )
        embeds = self.adapter_embeds(job.style_images, job.style_weights, job.guidance)
        generator = torch.Generator(device="cpu").manual_seed(job.seed)
        main_type = "pil" if job.detail_pass else output_type
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
        detail = (self.turbo if job.turbo else self.default).detail
        detail.scheduler = make_scheduler(job.scheduler, self._scheduler_config, turbo=job.turbo)
        width, height = job.image.size
        control = images if self.family.tile is not None else [job.control_image()] * count
        # One [negative, positive] pair per output: the batch here is the outputs, not one prompt.
        batch_embeds = [
            torch.cat([half.repeat(count, 1, 1) for half in embed.chunk(embed.shape[0])]) for embed in embeds
        ]
        return detail(
            prompt=[job.prompt] * count,
            negative_prompt=[job.negative_prompt] * count if job.negative_prompt else None,
            image=images,
            control_image=control,
            strength=DETAIL_STRENGTH,
            num_inference_steps=detail_inference_steps(job.steps),
            guidance_scale=job.guidance,
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


def _passes(family: Family, txt2img, tile) -> Passes:
    """img2img and the detail pass derived from ``txt2img`` (``from_pipe``: the same modules)."""
    _, img2img_cls = _pipeline_classes(family.name)
    img2img = img2img_cls.from_pipe(txt2img)
    detail = img2img if tile is None else img2img_cls.from_pipe(txt2img, controlnet=tile)
    return Passes(txt2img, img2img, detail)


def _turbo_txt2img(txt2img, lora_folder: Path):
    """``txt2img`` on a copy of its UNet (IP-Adapter layers included) with the LCM-LoRA in ``lora_folder``
    fused in, as diffusers documents it: ``load_lora_weights``, ``fuse_lora``, then ``unload_lora_weights``
    to drop the LoRA layers (the fused weights stay)."""
    turbo = type(txt2img).from_pipe(txt2img, unet=copy.deepcopy(txt2img.unet))
    turbo.load_lora_weights(
        str(lora_folder), weight_name=TURBO_LORA_WEIGHT, adapter_name="turbo", local_files_only=True
    )
    turbo.fuse_lora(components=["unet"])
    turbo.unload_lora_weights()
    log.info("Turbo: LCM-LoRA %s fused into a second UNet", lora_folder.name)
    return turbo


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
