"""MusePose on configurations and inputs nobody tuned for: seeded random UNet widths (first two sometimes
equal), spatial and temporal head counts, cross-attention widths, non-square generation sizes, pose videos of
other sizes, windows, overlaps, skips, lengths, steps and guidance. Each case is compared with the
restatement of upstream's loop in tests/upstream.py, so that a width/height swap, a head count or a window
rule taken from one configuration fails here.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from PIL import Image
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from predictors.musepose.animate import frame_plan
from predictors.musepose.models import build_denoising_unet, build_pose_guider, build_reference_unet
from predictors.musepose.models.config import UNET_ADDITIONAL_KWARGS
from predictors.musepose.models.loading import MusePoseModels
from predictors.musepose.models.motion_module import TemporalSelfAttention
from predictors.musepose.pipeline import MusePosePipeline, pad_poses, resize_poses, to_output_frames
from tests import upstream
from tools.tiny_weights.musepose import IMAGE_ENCODER_CONFIG, UNET_CONFIG, VAE_CONFIG

SEEDS = (11, 12, 13, 14)
# Intermediates within 1e-4 of their scale (the golden README's rule): the two loops batch the same work
# differently, so only the kernels' rounding may differ.
RELATIVE = 1e-4


@dataclass(frozen=True)
class Case:
    seed: int
    unet_config: dict
    motion_heads: int
    width: int
    height: int
    source_size: tuple[int, int]
    source_frames: int
    length: int
    skip: int
    window: int
    overlap: int
    steps: int
    guidance: float

    @property
    def motion_kwargs(self) -> dict:
        kwargs = {**UNET_ADDITIONAL_KWARGS}
        kwargs["motion_module_kwargs"] = {
            **kwargs["motion_module_kwargs"],
            "num_attention_heads": self.motion_heads,
        }
        return kwargs


def random_case(seed: int) -> Case:
    rng = random.Random(seed)
    first = rng.choice([32, 64])
    widths = [first, rng.choice([first, 64]), 96, 96]  # equal first widths: no shortcut conv there
    heads = rng.choice([1, 2, 4, 8])
    # Latents of 3-6: below that a 32-channel level of a tiny UNet is 1 x 1, too small for GroupNorm(32).
    width, height = 8 * rng.randint(3, 6), 8 * rng.randint(3, 6)
    while height == width:
        height = 8 * rng.randint(3, 6)
    window = rng.randint(2, 5)
    skip = rng.randint(0, 2)
    source_frames = rng.randint(skip + 1, 14)
    return Case(
        seed=seed,
        unet_config={
            **UNET_CONFIG,
            "block_out_channels": widths,
            "attention_head_dim": heads,
            "cross_attention_dim": rng.choice([16, 24, 32]),
        },
        motion_heads=rng.choice([1, 2, 4, 8]),
        width=width,
        height=height,
        source_size=(rng.randint(20, 70), rng.randint(20, 70)),
        source_frames=source_frames,
        length=rng.randint(skip + 1, source_frames + 3),
        skip=skip,
        window=window,
        overlap=rng.randint(0, window - 1),
        steps=rng.randint(1, 2),
        guidance=rng.choice([1.0, 2.5]),
    )


CASES = [random_case(seed) for seed in SEEDS]


def test_the_cases_cover_what_they_should():
    assert any(
        case.unet_config["block_out_channels"][0] == case.unet_config["block_out_channels"][1]
        for case in CASES
    )
    assert len({case.unet_config["attention_head_dim"] for case in CASES}) > 1
    assert len({case.motion_heads for case in CASES}) > 1
    assert any(case.width > case.height for case in CASES) and any(case.width < case.height for case in CASES)
    assert any(case.overlap > 0 for case in CASES) and len({case.skip for case in CASES}) > 1
    assert {case.guidance for case in CASES} == {1.0, 2.5}
    assert any(
        len(frame_plan(c.source_frames, c.length, c.skip)) > c.window for c in CASES
    )  # several windows


def build_models(case: Case) -> MusePoseModels:
    """Random networks of the case's configuration (float32, CPU, eval)."""
    config = case.unet_config
    with torch.random.fork_rng():
        torch.manual_seed(case.seed)
        models = MusePoseModels(
            vae=AutoencoderKL.from_config({k: v for k, v in VAE_CONFIG.items() if not k.startswith("_")}),
            image_encoder=CLIPVisionModelWithProjection(
                CLIPVisionConfig(**{**IMAGE_ENCODER_CONFIG, "projection_dim": config["cross_attention_dim"]})
            ),
            reference_unet=build_reference_unet(config),
            denoising_unet=build_denoising_unet(config, case.motion_kwargs),
            pose_guider=build_pose_guider(config),
        )
    return models.to(torch.device("cpu"), torch.float32)


def inputs(case: Case) -> tuple[Image.Image, np.ndarray]:
    rng = np.random.default_rng(case.seed)
    source_width, source_height = case.source_size
    reference = Image.fromarray(
        rng.integers(0, 256, (source_height + 13, source_width + 7, 3), dtype=np.uint8)
    )
    frames = rng.integers(0, 256, (case.source_frames, source_height, source_width, 3), dtype=np.uint8)
    return reference, frames


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"seed{case.seed}")
def test_the_pipeline_is_upstreams_loop(case):
    models = build_models(case)
    reference, frames = inputs(case)
    pipe = MusePosePipeline(models, torch.device("cpu"), torch.float32)
    used = frame_plan(case.source_frames, case.length, case.skip)
    poses = pad_poses(
        resize_poses([frames[i] for i in used], case.width, case.height), case.window, case.overlap
    )
    latents = pipe.denoise(
        poses,
        pipe.encode_reference(reference, case.width, case.height),
        steps=case.steps,
        guidance=case.guidance,
        window=case.window,
        overlap=case.overlap,
        generator=torch.Generator().manual_seed(case.seed),
    )
    decoded = torch.cat(list(pipe.decode(latents, chunk=3)))
    ours = to_output_frames(decoded[: len(used)], (frames.shape[2], frames.shape[1]))

    wanted_latents, wanted = upstream.stage_2(
        models,
        reference,
        frames,
        width=case.width,
        height=case.height,
        length=case.length,
        window=case.window,
        overlap=case.overlap,
        steps=case.steps,
        guidance=case.guidance,
        seed=case.seed,
        skip=case.skip,
    )
    assert latents.shape == wanted_latents.shape == (1, 4, len(poses), case.height // 8, case.width // 8)
    scale = wanted_latents.abs().max().item()
    assert (latents - wanted_latents).abs().max().item() <= RELATIVE * scale
    assert ours.shape == wanted.shape == (len(used), *frames.shape[1:])
    assert np.abs(ours.astype(int) - wanted.astype(int)).max() <= 1


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"seed{case.seed}")
def test_spatial_layers_are_the_2d_unet_frame_by_frame(case):
    """With every motion module's output projection zeroed, the denoising UNet is diffusers' UNet2D with the
    same config on each frame: its spatial head count and its width/height handling are diffusers' own."""
    config = case.unet_config
    with torch.random.fork_rng():
        torch.manual_seed(case.seed)
        denoising = build_denoising_unet(config, case.motion_kwargs).eval()
        stock = UNet2DConditionModel.from_config(config).eval()
    stock.load_state_dict({k: v for k, v in denoising.state_dict().items() if "motion_modules" not in k})
    for name, module in denoising.named_modules():
        if name.endswith("temporal_transformer"):
            torch.nn.init.zeros_(module.proj_out.weight)
            torch.nn.init.zeros_(module.proj_out.bias)
    generator = torch.Generator().manual_seed(case.seed)
    h, w = case.height // 8, case.width // 8
    sample = torch.randn(2, 4, 2, h, w, generator=generator)
    context = torch.randn(2, 1, config["cross_attention_dim"], generator=generator)
    pose = torch.randn(2, config["block_out_channels"][0], 2, h, w, generator=generator)
    upstream.assert_frames_equal_stock_unet(denoising, stock, sample, context, pose)


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"seed{case.seed}")
def test_motion_attention_uses_the_configured_heads(case):
    """Upstream's temporal attention: tokens of one spatial position across the window's frames, the
    sinusoid added from index 0, softmax(q k^T / sqrt(d)) v per head of d = C / heads channels."""
    channels, heads, frames = 32, case.motion_heads, 3
    with torch.random.fork_rng():
        torch.manual_seed(case.seed)
        attention = TemporalSelfAttention(channels, heads, position_max_len=16).eval()
    tokens = torch.randn(2 * frames, 5, channels, generator=torch.Generator().manual_seed(case.seed))
    with torch.no_grad():
        ours = attention(tokens, frames)
        sequences = tokens.view(2, frames, 5, channels).transpose(1, 2).reshape(10, frames, channels)
        sequences = sequences + attention.pos_encoder.pe[:, :frames]
        dim = channels // heads
        split = lambda t: t.view(10, frames, heads, dim).transpose(1, 2)  # noqa: E731
        q, k, v = (split(layer(sequences)) for layer in (attention.to_q, attention.to_k, attention.to_v))
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dim), dim=-1)
        merged = (weights @ v).transpose(1, 2).reshape(10, frames, channels)
        wanted = (
            attention.to_out[0](merged).view(2, 5, frames, channels).transpose(1, 2).reshape(6, 5, channels)
        )
    torch.testing.assert_close(ours, wanted, atol=1e-5, rtol=1e-5)
