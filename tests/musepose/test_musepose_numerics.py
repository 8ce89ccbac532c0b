"""MusePose's sampling arithmetic on tiny random networks, stated independently of the pipeline's code.

The golden tests prove the whole chain against upstream's numbers where ``../shared`` is present;
these pin the pieces everywhere: the classifier-free-guidance formula and row order, the averaging of
overlapping windows, the unconditional row that attends without the reference, the temporal position
encoding restarting at 0 in every window, the latent scale 0.18215 of the SD VAE, and the pose guider's input
range and layers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler
from PIL import Image
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from predictors.common.runtime import Progress
from predictors.musepose.models import build_denoising_unet, build_pose_guider, build_reference_unet
from predictors.musepose.models.config import UNET_ADDITIONAL_KWARGS
from predictors.musepose.models.loading import MusePoseModels
from predictors.musepose.models.motion_module import PositionalEncoding
from predictors.musepose.pipeline import MusePosePipeline
from tools.tiny_weights.musepose import IMAGE_ENCODER_CONFIG, UNET_CONFIG, VAE_CONFIG

SIZE = 64  # pixels; latents are 8x8


@pytest.fixture(scope="module")
def pipeline() -> MusePosePipeline:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        models = MusePoseModels(
            vae=AutoencoderKL.from_config({k: v for k, v in VAE_CONFIG.items() if not k.startswith("_")}),
            image_encoder=CLIPVisionModelWithProjection(CLIPVisionConfig(**IMAGE_ENCODER_CONFIG)),
            reference_unet=build_reference_unet(UNET_CONFIG),
            denoising_unet=build_denoising_unet(UNET_CONFIG, UNET_ADDITIONAL_KWARGS),
            pose_guider=build_pose_guider(UNET_CONFIG),
        )
    device = torch.device("cpu")
    return MusePosePipeline(models.to(device, torch.float32), device, torch.float32)


@pytest.fixture(scope="module")
def encoding(pipeline):
    rng = np.random.default_rng(0)
    reference = Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    return pipeline.encode_reference(reference, SIZE, SIZE)


def poses(frames: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (frames, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture
def calls(pipeline, monkeypatch):
    """Every denoising-UNet call (its inputs and output) and every prediction handed to the scheduler."""
    seen = {"unet": [], "scheduler": []}
    hook = pipeline.models.denoising_unet.register_forward_hook(
        lambda module, args, output: seen["unet"].append((tuple(a.clone() for a in args), output.clone()))
    )
    real_step = DDIMScheduler.step

    def step(self, model_output, *args, **kwargs):
        seen["scheduler"].append(model_output.clone())
        return real_step(self, model_output, *args, **kwargs)

    monkeypatch.setattr(DDIMScheduler, "step", step)
    yield seen
    hook.remove()


def denoise(pipeline, encoding, frames, *, guidance, window=4, overlap=1):
    return pipeline.denoise(
        poses(frames),
        encoding,
        steps=1,
        guidance=guidance,
        window=window,
        overlap=overlap,
        generator=torch.Generator().manual_seed(0),
    )


def test_guidance_is_uncond_plus_scale_times_the_difference(pipeline, encoding, calls):
    denoise(pipeline, encoding, 3, guidance=3.5)
    ((sample, _, context, _), output), prediction = calls["unet"][0], calls["scheduler"][0]
    # Row 0 is the unconditional one (a zero image embedding), row 1 the conditional one.
    assert sample.shape[0] == 2 and torch.equal(sample[0], sample[1])
    assert not context[0].any()
    torch.testing.assert_close(context[1:], encoding.clip_embeds)
    unconditional, conditional = output[:1], output[1:]
    torch.testing.assert_close(prediction, unconditional + 3.5 * (conditional - unconditional))


def test_no_guidance_runs_one_conditional_row(pipeline, encoding, calls):
    denoise(pipeline, encoding, 3, guidance=1.0)
    ((sample, _, context, _), output), prediction = calls["unet"][0], calls["scheduler"][0]
    assert sample.shape[0] == 1
    torch.testing.assert_close(context, encoding.clip_embeds)
    torch.testing.assert_close(prediction, output)


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_overlapping_windows_are_averaged(pipeline, encoding, calls, guidance):
    """7 frames in windows of 4 with overlap 1: [0-3] and [3-6]; frame 3 gets the mean of both windows."""
    denoise(pipeline, encoding, 7, guidance=guidance)
    (_, first), (_, second) = calls["unet"]
    expected = torch.cat([first[:, :, :3], (first[:, :, 3:] + second[:, :, :1]) / 2, second[:, :, 1:]], dim=2)
    if guidance > 1:
        expected = expected[:1] + guidance * (expected[1:] - expected[:1])
    torch.testing.assert_close(calls["scheduler"][0], expected)


def test_the_unconditional_row_attends_without_the_reference(pipeline, encoding, calls):
    denoise(pipeline, encoding, 3, guidance=2.0)
    (sample, timestep, context, pose), output = calls["unet"][0]
    features = pipeline.record_reference(encoding)
    unet = pipeline.models.denoising_unet
    with torch.no_grad():
        pipeline.bank.clear()
        plain = unet(sample[:1], timestep, context[:1], pose[:1])
        pipeline.bank.load(features, first_half_unconditional=False)
        with_reference = unet(sample[:1], timestep, context[:1], pose[:1])
        conditional = unet(sample[1:], timestep, context[1:], pose[1:])
    pipeline.bank.clear()
    torch.testing.assert_close(output[:1], plain, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(output[1:], conditional, atol=1e-5, rtol=1e-4)
    # The reference does change a row that reads it, so the first comparison is a real one.
    assert (with_reference - plain).abs().max() > 1e-3


def test_position_encoding_starts_at_zero_in_every_window():
    channels, frames = 8, 5
    encoder = PositionalEncoding(channels, max_len=32)
    tokens = torch.randn(3, frames, channels)
    added = encoder(tokens) - tokens
    for position in range(frames):
        for pair in range(channels // 2):
            angle = position / 10000 ** (2 * pair / channels)
            assert added[0, position, 2 * pair].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert added[0, position, 2 * pair + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    # Frame 0 of any window gets sin(0), cos(0): position 0, not the window's place in the video.
    torch.testing.assert_close(added[:, 0], torch.tensor([0.0, 1.0] * 4).expand(3, -1))


def test_latents_use_the_sd_vae_scale(pipeline, encoding):
    rng = np.random.default_rng(2)
    reference = Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    vae = pipeline.models.vae
    pixels = torch.from_numpy(np.asarray(reference, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    with torch.no_grad():
        mean = vae.encode(pixels).latent_dist.mean
        latents = pipeline.encode_reference(reference, SIZE, SIZE).latents
        torch.testing.assert_close(latents, mean * 0.18215, atol=1e-5, rtol=1e-4)
        video = torch.randn(1, 4, 3, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(3))
        (decoded,) = list(pipeline.decode(video, chunk=4))
        expected = (vae.decode(video[0].transpose(0, 1) / 0.18215).sample / 2 + 0.5).clamp(0, 1)
    torch.testing.assert_close(decoded, expected, atol=1e-5, rtol=1e-4)


def test_pose_guider_layers_and_input_range(pipeline):
    """conv_in, then 6 blocks (3x3, the odd ones stride 2), each followed by SiLU, then conv_out without one
    (ControlNet's conditioning embedding, as MusePose builds it); pose frames enter in 0..1."""
    guider = pipeline.models.pose_guider
    state = guider.state_dict()
    frames = poses(2)

    def conv(x, name, stride=1):
        return F.conv2d(x, state[f"{name}.weight"], state[f"{name}.bias"], stride=stride, padding=1)

    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    x = F.silu(conv(x, "conv_in"))
    for index in range(6):
        x = F.silu(conv(x, f"blocks.{index}", stride=2 if index % 2 else 1))
    expected = conv(x, "conv_out")
    features = pipeline.pose_features(frames)
    assert features.shape == (1, UNET_CONFIG["block_out_channels"][0], 2, SIZE // 8, SIZE // 8)
    torch.testing.assert_close(features[0].transpose(0, 1), expected, atol=1e-5, rtol=1e-4)


def test_each_unet_call_reports_its_progress(pipeline, encoding, calls):
    """2 steps x 3 windows (10 frames, window 4, overlap 1): one Progress per UNet call, after it."""
    seen = []
    pipeline.denoise(
        poses(10),
        encoding,
        steps=2,
        guidance=1.0,
        window=4,
        overlap=1,
        generator=torch.Generator().manual_seed(0),
        on_step=lambda progress: seen.append((progress, len(calls["unet"]))),
    )
    assert seen == [(Progress("denoise", step, 6), step) for step in range(1, 7)]
