"""MusePose stage 2 (pose-guided video generation) in plain PyTorch + diffusers.

The semantics are upstream's ``Pose2VideoPipeline`` (TMElyralab/MusePose, ``pipeline_pose2vid_long.py``)
driven by ``test_stage_2.py``; the differences are only in how the work is scheduled:
- the ReferenceNet runs once, on the conditional row only (upstream also runs an unconditional row whose
  features are never read);
- reference keys/values are projected once per block instead of once per frame;
- pose features are recomputed per window from the stored uint8 pose frames, and the VAE decodes in chunks
  that stream to a frame sink, so memory stays flat with the number of frames (except for the latents).

One deliberate difference in the numbers: without guidance (``guidance <= 1``) upstream forgets to divide
the summed window predictions by the visit count, so frames shared by two windows get twice the predicted
velocity. Here they are averaged as in the guided case; with guidance, or without overlapping windows, the
results are upstream's.

Conventions: images are PIL RGB; ``width``/``height`` are the generation size (multiples of 8); latents are
[1, 4, frames, height/8, width/8].
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from diffusers.image_processor import VaeImageProcessor
from PIL import Image
from transformers import CLIPImageProcessorPil

from predictors.common.runtime import Progress, StepCallback, progress_bar
from predictors.musepose.models import ReferenceBank, install_reference_readers, install_reference_writers
from predictors.musepose.models.config import SCHEDULER_KWARGS
from predictors.musepose.models.loading import MusePoseModels

LATENT_SCALE = 0.18215
VAE_FACTOR = 8
CLIP_SIZE = (224, 224)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------
# Window arithmetic (test_stage_2.py's padding + the "uniform" context scheduler), as pure functions.


def padding_repeats(length: int, window: int, overlap: int) -> int:
    """How many times the last pose frame is repeated so that windows of S with overlap O tile exactly."""
    stride = window - overlap
    return (stride - (length - window) % stride) % stride


def context_windows(frames: int, window: int, overlap: int) -> list[list[int]]:
    """Upstream's uniform schedule at stride 1 and step 0, without wrap-around (``closed_loop=False``)."""
    if frames <= window:
        return [list(range(frames))]
    return [
        [index % frames for index in range(start, start + window)]
        for start in range(0, frames - overlap, window - overlap)
    ]


# ----------------------------------------------------------------------------------------------------------
# The pipeline


class WindowShare(Protocol):
    """This process's part of a denoising run shared by several processes (``distributed.Share``)."""

    def assigned(self, windows: Sequence[Sequence[int]]) -> Sequence[Sequence[int]]:
        """The windows this process runs (their frame ids)."""

    def combine(self, prediction: torch.Tensor, visits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions and visits summed over all processes."""


@dataclass(frozen=True)
class ReferenceEncoding:
    clip_embeds: torch.Tensor  # [1, 1, D]
    latents: torch.Tensor  # [1, 4, h, w]


def resize_horizontal_first(image: Image.Image, size: tuple[int, int], resample: int) -> Image.Image:
    """``image.resize(size, resample)`` as Pillow 10.4-12.1 compute it, whatever Pillow is installed.

    Pillow resamples in two separable passes and rounds to 8 bits in between, so the order of the passes
    shows in the result. Up to 12.1 the horizontal pass always came first (12.2 made an exception only for
    images over 100 times taller than wide); Pillow 13 runs the vertical pass first whenever the height loses
    more than twice as many pixels as the width (python-pillow/Pillow#9549, ``Resample.c``), which moves
    Lanczos results by up to 18 levels (1080x1920 -> 768x768). MusePose and its users ran the horizontal-first
    order. Two calls that each change one side make Pillow run exactly one pass each, with the coefficients
    of the combined call, so the result is the horizontal-first one in every version;
    tests/musepose/test_resize_parity.py checks it against hashes written with Pillow 10.4.0
    (tools/resize_fixtures.py).
    """
    width, height = size
    if width != image.width:
        image = image.resize((width, image.height), resample)
    if height != image.height:
        image = image.resize((width, height), resample)
    return image


def resize_poses(frames: Sequence[Image.Image | np.ndarray], width: int, height: int) -> np.ndarray:
    """uint8 [n, height, width, 3]: each pose frame resized with PIL Lanczos to exactly width x height."""
    resized = np.empty((len(frames), height, width, 3), dtype=np.uint8)
    for index, frame in enumerate(frames):
        image = frame if isinstance(frame, Image.Image) else Image.fromarray(np.asarray(frame))
        resized[index] = np.asarray(
            resize_horizontal_first(image.convert("RGB"), (width, height), Image.LANCZOS)
        )
    return resized


def pad_poses(poses: np.ndarray, window: int, overlap: int) -> np.ndarray:
    """Repeat the last pose so that the windows tile the sequence exactly (upstream's padding)."""
    repeats = padding_repeats(len(poses), window, overlap)
    return np.concatenate([poses, np.repeat(poses[-1:], repeats, axis=0)]) if repeats else poses


def to_output_frames(frames: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """[n, 3, h, w] in [0, 1] -> uint8 [n, H, W, 3] at ``size`` (W, H): bilinear, then truncation."""
    width, height = size
    if frames.shape[-2:] != (height, width):
        frames = F.interpolate(frames, size=(height, width), mode="bilinear", align_corners=False)
    return (frames.permute(0, 2, 3, 1).float() * 255).cpu().numpy().astype(np.uint8)


class MusePosePipeline:
    def __init__(self, models: MusePoseModels, device: torch.device, dtype: torch.dtype):
        """``models`` must already be on ``device`` in ``dtype`` (``MusePoseModels.to``)."""
        self.models = models
        if device.type == "cuda":
            # Slicing the feed-forward layers lowers the peak memory of a long window at no cost in results.
            models.denoising_unet.enable_feed_forward_chunking()
        self.device = device
        self.dtype = dtype
        self.recorded = install_reference_writers(models.reference_unet)
        self.bank = ReferenceBank()
        install_reference_readers(models.denoising_unet, self.bank)
        self.clip_processor = CLIPImageProcessorPil()
        self.reference_processor = VaeImageProcessor(vae_scale_factor=VAE_FACTOR, do_convert_rgb=True)

    # -- conditioning ------------------------------------------------------------------------------------

    def clip_pixels(self, reference: Image.Image) -> torch.Tensor:
        resized = resize_horizontal_first(reference.convert("RGB"), CLIP_SIZE, Image.BICUBIC)
        # Already 224 x 224: the processor's own shortest-edge resize and centre crop leave it unchanged.
        return self.clip_processor(images=resized, return_tensors="pt").pixel_values

    def reference_pixels(self, reference: Image.Image, width: int, height: int) -> torch.Tensor:
        """The VAE input: Lanczos to exactly width x height (resized here, so that the processor's own
        resize is a no-op), then [-1, 1]."""
        resized = resize_horizontal_first(reference.convert("RGB"), (width, height), Image.LANCZOS)
        return self.reference_processor.preprocess(resized, height=height, width=width)

    @torch.no_grad()
    def encode_reference(self, reference: Image.Image, width: int, height: int) -> ReferenceEncoding:
        models = self.models
        pixels = self.clip_pixels(reference).to(self.device, self.dtype)
        clip_embeds = models.image_encoder(pixels).image_embeds.unsqueeze(1)
        image = self.reference_pixels(reference, width, height).to(self.device, self.dtype)
        latents = models.vae.encode(image).latent_dist.mean * LATENT_SCALE
        return ReferenceEncoding(clip_embeds=clip_embeds, latents=latents)

    @torch.no_grad()
    def record_reference(self, encoding: ReferenceEncoding) -> dict[str, torch.Tensor]:
        """Run the ReferenceNet once at t=0 on the conditional row; returns each block's recorded tokens."""
        self.recorded.clear()
        timestep = torch.zeros((), dtype=torch.long, device=self.device)
        self.models.reference_unet(encoding.latents, timestep, encoder_hidden_states=encoding.clip_embeds)
        features = dict(self.recorded)
        self.recorded.clear()
        return features

    @torch.no_grad()
    def pose_features(self, poses: np.ndarray) -> torch.Tensor:
        """uint8 [n, H, W, 3] -> pose guider output [1, C, n, H/8, W/8]."""
        frames = torch.from_numpy(np.ascontiguousarray(poses)).to(self.device).permute(0, 3, 1, 2)
        features = self.models.pose_guider(frames.to(torch.float32).div(255).to(self.dtype))
        return features.transpose(0, 1).unsqueeze(0)

    # -- denoising ---------------------------------------------------------------------------------------

    def initial_noise(self, frames: int, width: int, height: int, generator: torch.Generator) -> torch.Tensor:
        """The first draw of ``generator`` (CPU) in float32, as in upstream's fp32 run, in the model dtype."""
        shape = (1, 4, frames, height // VAE_FACTOR, width // VAE_FACTOR)
        return torch.randn(shape, generator=generator, dtype=torch.float32).to(self.device, self.dtype)

    @torch.no_grad()
    def denoise(
        self,
        poses: np.ndarray,
        encoding: ReferenceEncoding,
        *,
        steps: int,
        guidance: float,
        window: int,
        overlap: int,
        generator: torch.Generator,
        reference_features: dict[str, torch.Tensor] | None = None,
        share: WindowShare | None = None,
        on_step: StepCallback | None = None,
    ) -> torch.Tensor:
        """Latents [1, 4, N, h, w] for the N (already padded) resized pose frames ``poses`` [N, H, W, 3].

        ``reference_features`` (from ``record_reference``) may be passed to reuse the ReferenceNet's work for
        several videos of the same reference; by default the ReferenceNet runs once here. One progress bar
        counts the denoising-UNet calls (steps x windows); ``on_step`` gets a ``Progress("denoise", ...)``
        after each of them.

        ``share``: when several processes denoise together (``distributed``), this process runs only its
        share of each step's windows (and its bar counts those), and the share sums the predictions and
        visits of all processes before the scheduler step, so that every process takes the same step.

        Over 60 lines by its keyword arguments and this text; the body is the recipe (noise, windows, the
        reference bank, one scheduler step per timestep).
        """
        frames, height, width = poses.shape[:3]
        latents = self.initial_noise(frames, width, height, generator)
        scheduler = DDIMScheduler(**SCHEDULER_KWARGS)
        scheduler.set_timesteps(steps, device=self.device)
        latents = latents * scheduler.init_noise_sigma
        use_cfg = guidance > 1.0
        context = encoding.clip_embeds
        if use_cfg:
            context = torch.cat([torch.zeros_like(context), context])
        windows = context_windows(frames, window, overlap)
        if reference_features is None:
            reference_features = self.record_reference(encoding)
        self.bank.load(reference_features, first_half_unconditional=use_cfg)
        assigned = windows if share is None else share.assigned(windows)
        calls = len(scheduler.timesteps) * len(assigned)
        log.info(
            "Denoising %d frames in %d window(s) of %d (overlap %d), %d steps: %d UNet calls.",
            *(frames, len(windows), window, overlap, len(scheduler.timesteps), calls),
        )
        started = time.perf_counter()
        try:
            with progress_bar(calls) as bar:

                def called() -> None:
                    bar.update(1)
                    if on_step is not None:
                        on_step(Progress("denoise", bar.n, calls))

                for timestep in scheduler.timesteps:
                    prediction = self._prediction(
                        latents, timestep, scheduler, poses, context, guidance, assigned, share, called
                    )
                    latents = scheduler.step(
                        prediction, timestep, latents, eta=0.0, generator=generator
                    ).prev_sample
        finally:
            self.bank.clear()
        log.info("Denoising done in %.1f s.", time.perf_counter() - started)
        return latents

    def _prediction(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        scheduler: DDIMScheduler,
        poses: np.ndarray,
        context: torch.Tensor,
        guidance: float,
        assigned: Iterable[Sequence[int]],
        share: WindowShare | None,
        called: Callable[[], None],
    ) -> torch.Tensor:
        """One step's prediction: the windows' predictions averaged per frame (over all processes with a
        ``share``), then guided when the context is a CFG pair [unconditional, conditional]."""
        rows, frames = context.shape[0], latents.shape[2]
        prediction = torch.zeros((rows, *latents.shape[1:]), device=self.device, dtype=latents.dtype)
        visits = torch.zeros((1, 1, frames, 1, 1), device=self.device, dtype=latents.dtype)
        for frame_ids in assigned:
            sample = scheduler.scale_model_input(latents[:, :, frame_ids].repeat(rows, 1, 1, 1, 1), timestep)
            pose = self.pose_features(poses[frame_ids]).repeat(rows, 1, 1, 1, 1)
            prediction[:, :, frame_ids] += self.models.denoising_unet(sample, timestep, context, pose)
            visits[:, :, frame_ids] += 1
            called()
        if share is not None:
            prediction, visits = share.combine(prediction, visits)
        prediction = prediction / visits
        if rows == 1:
            return prediction
        unconditional, conditional = prediction.chunk(2)
        return unconditional + guidance * (conditional - unconditional)

    # -- decoding ----------------------------------------------------------------------------------------

    def decode(self, latents: torch.Tensor, chunk: int) -> Iterator[torch.Tensor]:
        """Yield decoded frames [n <= chunk, 3, H, W] float32 in [0, 1], in order (padded frames included)."""
        for start in range(0, latents.shape[2], chunk):
            yield self.decode_frames(latents[:, :, start : start + chunk])

    @torch.no_grad()
    def decode_frames(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [1, 4, n, h, w] -> frames [n, 3, H, W] float32 in [0, 1], decoded as one batch."""
        batch = (1 / LATENT_SCALE * latents)[0].transpose(0, 1)
        pixels = self.models.vae.decode(batch).sample
        return (pixels / 2 + 0.5).clamp(0, 1).float()
