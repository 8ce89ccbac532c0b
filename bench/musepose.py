"""Benchmark of the MusePose core: a cost model at the real size, measured CPU time per component, and peak
memory against the number of frames. Prints tables; asserts nothing.

Networks: full size (sd-image-variations UNet widths, sd-vae-ft-mse, CLIP ViT-L/14, MusePose's motion
modules and pose guider) with RANDOM weights. Timings are real for these architectures; the images mean
nothing.

- Cost model: FLOPs counted by ``torch.utils.flop_counter`` on the meta device (nothing allocated) at
  upstream's default 768x768 with a 48-frame window and CFG, for our scheduling and for upstream's (its
  reference attention projects the reference tokens once per frame and row and recomputes the unconditional
  half; its ReferenceNet runs both CFG rows).
- Time: CPU process time, one thread, on a small latent (``--size`` pixels square, ``--window`` frames).
- Memory: peak RSS of this process after generating N frames (increasing N, fixed window); the growth per
  frame beyond one window is what matters.
- DWPose's real ONNX networks are not available here: its row is the published cost (see bench/pose.py for
  the measured pre/post-processing).

    python -m bench.musepose [--size 128] [--window 4] [--frames 4 10 19]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import torch
from diffusers import AutoencoderKL
from diffusers.models.attention_processor import AttnProcessor2_0
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from predictors.common.video import VideoWriter
from predictors.musepose.models import (
    ReferenceBank,
    build_denoising_unet,
    build_pose_guider,
    build_reference_unet,
    install_reference_readers,
    install_reference_writers,
)
from predictors.musepose.models.motion_module import PositionalEncoding, sinusoidal_table
from predictors.musepose.pipeline import (
    POSE_GUIDER_BLOCKS,
    UNET_ADDITIONAL_KWARGS,
    MusePoseModels,
    MusePosePipeline,
    ReferenceEncoding,
    context_windows,
    padding_repeats,
    to_output_frames,
)
from tools.tiny_weights.musepose import FULL_IMAGE_ENCODER_CONFIG, FULL_UNET_CONFIG, FULL_VAE_CONFIG

REAL_SIZE, REAL_WINDOW = 768, 48
# Published costs of the DWPose ONNX networks per image: YOLOX-L at 640x640, DWPose-L at 384x288 (x2 for
# MusePose's flip test).
DWPOSE_GFLOPS = 155.6 + 2 * 17.4


# ------------------------------------------------------------------------------------------------- models


def randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Materialise a meta-built module on the CPU with cheap random weights (tiled from a small pool)."""
    module = module.to_empty(device="cpu")
    pool = torch.randn(1 << 20, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.ndim > 1:
                flat, scale = param.view(-1), param[0].numel() ** -0.5
                for start in range(0, flat.numel(), pool.numel()):
                    chunk = flat[start : start + pool.numel()]
                    chunk.copy_(pool[: chunk.numel()] * scale)
            else:
                param.fill_(1.0 if name.endswith("weight") else 0.0)
        for submodule in module.modules():
            if isinstance(submodule, PositionalEncoding):
                submodule.pe = sinusoidal_table(*submodule.pe.shape[1:])
        for name, buffer in module.named_buffers():
            if name.endswith("position_ids"):  # CLIP's token indices
                buffer.copy_(torch.arange(buffer.shape[-1]).expand_as(buffer))
    return module.eval().requires_grad_(False)


def meta_models() -> MusePoseModels:
    with torch.device("meta"):
        return MusePoseModels(
            vae=AutoencoderKL.from_config(
                {k: v for k, v in FULL_VAE_CONFIG.items() if not k.startswith("_")}
            ),
            image_encoder=CLIPVisionModelWithProjection(CLIPVisionConfig(**FULL_IMAGE_ENCODER_CONFIG)),
            reference_unet=build_reference_unet(FULL_UNET_CONFIG),
            denoising_unet=build_denoising_unet(FULL_UNET_CONFIG, UNET_ADDITIONAL_KWARGS),
            pose_guider=build_pose_guider(FULL_UNET_CONFIG["block_out_channels"][0], POSE_GUIDER_BLOCKS),
        )


class UpstreamReader(AttnProcessor2_0):
    """Upstream's reference attention, for counting: every row attends over concat(own, reference repeated
    per frame), then the unconditional half is computed again without reference."""

    def __init__(self, bank: ReferenceBank, name: str):
        super().__init__()
        self.bank, self.name = bank, name

    def __call__(self, attn, hidden_states, *args, **kwargs):
        reference = self.bank.features[self.name].to(hidden_states.dtype)
        rows = hidden_states.shape[0]
        mixed = torch.cat([hidden_states, reference.expand(rows, -1, -1)], dim=1)
        out = super().__call__(attn, hidden_states, encoder_hidden_states=mixed)
        plain = super().__call__(attn, hidden_states[: rows // 2])
        return torch.cat([plain, out[rows // 2 :]])


# ---------------------------------------------------------------------------------------------- cost model


def count_flops(function: Callable[[], object]) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        function()
    return counter.get_total_flops()


def cost_model() -> list[tuple[str, float, float]]:
    """(component, our GFLOPs, upstream GFLOPs) at 768x768, a 48-frame window, CFG."""
    models = meta_models()
    latent = REAL_SIZE // 8
    device = {"device": "meta"}
    context = torch.zeros(2, 1, 768, **device)
    rows = []

    recorded = install_reference_writers(models.reference_unet)
    two = count_flops(lambda: models.reference_unet(torch.zeros(2, 4, latent, latent, **device), 0, context))
    one = count_flops(
        lambda: models.reference_unet(torch.zeros(1, 4, latent, latent, **device), 0, context[:1])
    )
    rows.append(("ReferenceNet, once per video", one / 1e9, two / 1e9))

    bank = ReferenceBank()
    features = dict(recorded)  # meta tensors of the real shapes, from the batch-1 run
    unet = models.denoising_unet
    sample = torch.zeros(2, 4, REAL_WINDOW, latent, latent, **device)
    pose = torch.zeros(2, 320, REAL_WINDOW, latent, latent, **device)
    names = install_reference_readers(unet, bank)
    bank.features, bank.first_half_unconditional = features, True
    ours = count_flops(lambda: unet(sample, 999, context, pose))
    modules = dict(unet.named_modules())
    for name in names:
        modules[name].attn1.set_processor(UpstreamReader(bank, name))
    theirs = count_flops(lambda: unet(sample, 999, context, pose))
    rows.append(
        ("UNet3D per frame per step (CFG pair)", ours / REAL_WINDOW / 1e9, theirs / REAL_WINDOW / 1e9)
    )

    guider = count_flops(lambda: models.pose_guider(torch.zeros(1, 3, REAL_SIZE, REAL_SIZE, **device)))
    rows.append(("pose guider per frame", guider / 1e9, guider / 1e9))
    decode = count_flops(lambda: models.vae.decode(torch.zeros(1, 4, latent, latent, **device)))
    rows.append(("VAE decode per frame", decode / 1e9, decode / 1e9))
    rows.append(("DWPose per frame (published)", DWPOSE_GFLOPS, DWPOSE_GFLOPS))
    return rows


# ----------------------------------------------------------------------------------------------- timings


def cpu_seconds(function: Callable[[], object], repeats: int = 2) -> float:
    """Median CPU process time of ``repeats`` calls after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        function()
        times.append(time.process_time() - start)
    return float(np.median(times))


class PeakRss:
    """Samples this process's resident memory every 10 ms while the ``with`` block runs (MB)."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = 0.0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss / 2**20)
            self._stop.wait(0.01)

    def __enter__(self) -> PeakRss:
        self.start = self.process.memory_info().rss / 2**20
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=128, help="square generation size in pixels (CPU rows)")
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--overlap", type=int, default=1)
    parser.add_argument("--frames", type=int, nargs="+", default=[4, 10, 19])
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)

    print(f"Cost model at {REAL_SIZE}x{REAL_SIZE}, window {REAL_WINDOW}, CFG (GFLOPs):")
    print(f"{'component':40s} {'ours':>10s} {'upstream':>10s} {'ratio':>6s}")
    for name, ours, theirs in cost_model():
        print(f"{name:40s} {ours:10.1f} {theirs:10.1f} {theirs / ours:6.2f}")

    size, latent, window = args.size, args.size // 8, args.window
    models = meta_models()
    rows: list[tuple[str, float, str]] = []

    encoder = randomise(models.image_encoder, 1)
    pixels = torch.randn(1, 3, 224, 224)
    rows.append(("CLIP image encoder, once", cpu_seconds(lambda: encoder(pixels)), "per video"))
    models.image_encoder = encoder.to("meta")

    reference = randomise(models.reference_unet, 2)
    recorded = install_reference_writers(reference)
    ref_latents, context = torch.randn(1, 4, latent, latent), torch.randn(2, 1, 768)
    with torch.no_grad():
        rows.append(
            ("ReferenceNet, once", cpu_seconds(lambda: reference(ref_latents, 0, context[1:])), "per video")
        )
        upstream = cpu_seconds(lambda: reference(ref_latents.repeat(2, 1, 1, 1), 0, context))
        rows.append(("ReferenceNet, upstream's two rows", upstream, "per video"))
        reference(ref_latents, 0, context[1:])
    features = dict(recorded)
    models.reference_unet = reference.to("meta")

    guider = randomise(models.pose_guider, 3)
    poses = torch.rand(window, 3, size, size)
    with torch.no_grad():
        rows.append(("pose guider", cpu_seconds(lambda: guider(poses)) / window, "per frame per window call"))
    models.pose_guider = guider

    vae = randomise(models.vae, 4)
    with torch.no_grad():
        rows.append(
            (
                "VAE encode (reference)",
                cpu_seconds(lambda: vae.encode(torch.randn(1, 3, size, size))),
                "per video",
            )
        )
        rows.append(
            ("VAE decode", cpu_seconds(lambda: vae.decode(torch.randn(1, 4, latent, latent))), "per frame")
        )
    models.vae = vae

    unet = randomise(models.denoising_unet, 5)
    models.denoising_unet = unet
    pipeline = MusePosePipeline(models, torch.device("cpu"), torch.float32)
    pipeline.bank.load(features, first_half_unconditional=True)
    sample, pose = torch.randn(2, 4, window, latent, latent), torch.randn(2, 320, window, latent, latent)
    with torch.no_grad():
        call = cpu_seconds(lambda: unet(sample, 999, context, pose))
    pipeline.bank.clear()
    rows.append((f"UNet3D call ({window} frames, CFG pair)", call, "per window per step"))
    rows.append(("UNet3D", call / window, "per frame per step"))

    with tempfile.TemporaryDirectory() as folder:
        frames = np.random.default_rng(0).integers(0, 256, (8, 768, 576, 3), dtype=np.uint8)

        def encode() -> None:
            with VideoWriter(Path(folder) / "bench.mp4", 24) as writer:
                for frame in frames:
                    writer.write(frame)

        rows.append(("H.264 encode 576x768", cpu_seconds(encode, 1) / len(frames), "per frame"))

    print(
        f"\nMeasured CPU time, 1 thread, {size}x{size} (latent {latent}x{latent}), full-size random weights:"
    )
    print(f"{'component':40s} {'seconds':>9s}  unit")
    for name, seconds, unit in rows:
        print(f"{name:40s} {seconds:9.3f}  {unit}")

    print(f"\nPeak RSS against frames (window {window}, overlap {args.overlap}, 1 step, decode streamed):")
    print(
        f"{'frames':>6s} {'padded':>6s} {'windows':>7s} {'RSS before':>10s} {'peak MB':>8s} {'seconds':>8s}"
    )
    encoding = ReferenceEncoding(clip_embeds=torch.randn(1, 1, 768), latents=ref_latents)
    for count in sorted(args.frames):
        padded = count + padding_repeats(count, window, args.overlap)
        resized = np.random.default_rng(count).integers(0, 256, (padded, size, size, 3), dtype=np.uint8)
        start = time.process_time()
        with PeakRss() as memory:
            latents = pipeline.denoise(
                resized,
                encoding,
                steps=1,
                guidance=3.5,
                window=window,
                overlap=args.overlap,
                generator=torch.Generator().manual_seed(0),
                reference_features=features,
            )
            for chunk in pipeline.decode(latents, chunk=4):
                to_output_frames(chunk, (size, size))
        windows = len(context_windows(padded, window, args.overlap))
        seconds = time.process_time() - start
        print(f"{count:6d} {padded:6d} {windows:7d} {memory.start:10.0f} {memory.peak:8.0f} {seconds:8.1f}")


if __name__ == "__main__":
    main()
