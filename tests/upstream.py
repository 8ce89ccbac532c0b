"""Restatements of upstream MusePose for tests: what ``test_stage_2.py`` and ``Pose2VideoPipeline``
(TMElyralab/MusePose, ``musepose/pipelines/pipeline_pose2vid_long.py``, ``context.py``,
``mutual_self_attention.py``) do, written in the upstream order and shapes, independent of how
``predictors.musepose.pipeline`` schedules the same work. Only the networks are shared.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import AttnProcessor
from PIL import Image
from transformers import CLIPImageProcessorPil

from predictors.musepose.models.config import SCHEDULER_KWARGS
from predictors.musepose.models.loading import MusePoseModels
from predictors.musepose.pipeline import resize_horizontal_first

LATENT_SCALE = 0.18215


def upstream_uniform_windows(frames: int, window: int, overlap: int) -> list[list[int]]:
    """MusePose's "uniform" context scheduler as test_stage_2 drives it: step 0 (no offset), context stride
    1, closed_loop=False."""
    if frames <= window:
        return [list(range(frames))]
    stride = min(1, int(np.ceil(np.log2(frames / window))) + 1)
    return [
        [index % frames for index in range(start, start + window * step, step)]
        for step in 1 << np.arange(stride)
        for start in range(0, frames - overlap, window * step - overlap)
    ]


class MutualSelfAttention:
    """Upstream's reader, as its patched ``BasicTransformerBlock.forward`` computes it: ``attn1`` with keys
    and values over [own tokens, the block's bank repeated over the frames] on every row, then the first
    (unconditional) half of the rows computed again as plain self-attention. diffusers' classic processor
    does the attention, so head counts are diffusers' own."""

    def __init__(self, bank: torch.Tensor, unconditional_half: bool):
        self.bank = bank
        self.unconditional_half = unconditional_half
        self.plain = AttnProcessor()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        rows = hidden_states.shape[0]
        bank = self.bank.to(hidden_states.dtype).repeat_interleave(rows // self.bank.shape[0], dim=0)
        out = self.plain(attn, hidden_states, torch.cat([hidden_states, bank], dim=1))
        if self.unconditional_half:
            half = rows // 2
            out[:half] = self.plain(attn, hidden_states[:half], hidden_states[:half])
        return out


def _spatial_blocks(unet: torch.nn.Module) -> dict[str, BasicTransformerBlock]:
    return {
        name: module
        for name, module in unet.named_modules()
        if isinstance(module, BasicTransformerBlock) and "motion_modules" not in name
    }


def stage_2(
    models: MusePoseModels,
    reference: Image.Image,
    pose_frames: np.ndarray,
    *,
    width: int,
    height: int,
    length: int,
    window: int,
    overlap: int,
    steps: int,
    guidance: float,
    seed: int,
    skip: int,
) -> tuple[torch.Tensor, np.ndarray]:
    """(latents after the last step [1, 4, N, h, w], uint8 output frames at the pose frames' size).

    One documented departure from upstream, the one the pipeline makes on purpose: without guidance the
    summed window predictions are divided by the visit count too (upstream forgets it there).
    """
    source_height, source_width = pose_frames.shape[1:3]
    frames = list(pose_frames[:: skip + 1])
    kept = min(length, len(pose_frames)) // (skip + 1)
    frames = frames[:kept]
    stride = window - overlap
    frames += [frames[-1]] * ((stride - (kept - window) % stride) % stride)
    count = len(frames)

    resized = [resize_horizontal_first(Image.fromarray(f), (width, height), Image.LANCZOS) for f in frames]
    pose_tensor = torch.from_numpy(np.stack([np.asarray(f) for f in resized])).float().div(255)
    pose_tensor = pose_tensor.permute(3, 0, 1, 2)[None]  # [1, 3, N, H, W]

    guided = guidance > 1.0
    rows = 2 if guided else 1
    with torch.no_grad():
        clip_input = resize_horizontal_first(reference, (224, 224), Image.BICUBIC)
        pixels = CLIPImageProcessorPil()(images=clip_input, return_tensors="pt").pixel_values
        clip = models.image_encoder(pixels).image_embeds.unsqueeze(1)
        context = torch.cat([torch.zeros_like(clip), clip]) if guided else clip
        vae_input = np.asarray(resize_horizontal_first(reference, (width, height), Image.LANCZOS))
        vae_input = torch.from_numpy(vae_input.astype(np.float32) / 255 * 2 - 1).permute(2, 0, 1)[None]
        reference_latents = models.vae.encode(vae_input).latent_dist.mean * LATENT_SCALE

        poses = pose_tensor[0].transpose(0, 1)  # the guider's inflated convs: every frame alike
        pose_features = models.pose_guider(poses).transpose(0, 1)[None]

        # test_stage_2 calls torch.manual_seed(seed) and draws from the global generator: the same stream.
        generator = torch.Generator().manual_seed(seed)
        latents = torch.randn((1, 4, count, height // 8, width // 8), generator=generator)
        scheduler = DDIMScheduler(**SCHEDULER_KWARGS)
        scheduler.set_timesteps(steps)
        latents = latents * scheduler.init_noise_sigma

        # The ReferenceNet once, at timestep 0, on the CFG batch; each block's norm1 output is the bank.
        banks, hooks = {}, []
        for name, block in _spatial_blocks(models.reference_unet).items():
            hooks.append(block.norm1.register_forward_hook(lambda m, i, o, n=name: banks.setdefault(n, o)))
        try:
            models.reference_unet(reference_latents.repeat(rows, 1, 1, 1), 0, encoder_hidden_states=context)
        finally:
            for hook in hooks:
                hook.remove()

        readers = _spatial_blocks(models.denoising_unet)
        saved = {name: block.attn1.processor for name, block in readers.items()}
        for name, block in readers.items():
            block.attn1.set_processor(MutualSelfAttention(banks[name].to(torch.float16), guided))
        try:
            for timestep in scheduler.timesteps:
                prediction = torch.zeros((rows, *latents.shape[1:]))
                visits = torch.zeros((1, 1, count, 1, 1))
                for frame_ids in upstream_uniform_windows(count, window, overlap):
                    sample = scheduler.scale_model_input(
                        latents[:, :, frame_ids].repeat(rows, 1, 1, 1, 1), timestep
                    )
                    condition = pose_features[:, :, frame_ids].repeat(rows, 1, 1, 1, 1)
                    prediction[:, :, frame_ids] += models.denoising_unet(sample, timestep, context, condition)
                    visits[:, :, frame_ids] += 1
                prediction = prediction / visits
                if guided:
                    unconditional, conditional = prediction.chunk(2)
                    prediction = unconditional + guidance * (conditional - unconditional)
                latents = scheduler.step(prediction, timestep, latents, eta=0.0).prev_sample
        finally:
            for name, block in readers.items():
                block.attn1.set_processor(saved[name])

        videos = torch.cat(
            [models.vae.decode(latents[:, :, index] / LATENT_SCALE).sample for index in range(count)]
        )
        videos = (videos / 2 + 0.5).clamp(0, 1)[:kept]
        scaled = F.interpolate(
            videos, size=(source_height, source_width), mode="bilinear", align_corners=False
        )
        output = (scaled.permute(0, 2, 3, 1) * 255).numpy().astype(np.uint8)
    return latents, output


def assert_frames_equal_stock_unet(denoising, stock, sample, context, pose) -> None:
    """With its temporal layers silenced, the UNet3D equals diffusers' UNet2D frame by frame, the pose
    features added after ``conv_in`` as upstream's UNet3D adds them ([B, C, F, H, W] inputs, timestep 500)."""
    with torch.no_grad():
        ours = denoising(sample, 500, context, pose)
        for b in range(sample.shape[0]):
            for f in range(sample.shape[2]):
                hook = stock.conv_in.register_forward_hook(lambda m, i, o, p=pose[b : b + 1, :, f]: o + p)
                try:
                    frame = stock(
                        sample[b : b + 1, :, f], 500, encoder_hidden_states=context[b : b + 1]
                    ).sample
                finally:
                    hook.remove()
                torch.testing.assert_close(ours[b : b + 1, :, f], frame, atol=2e-5, rtol=1e-4)
