"""Benchmark of the MusePose core: a cost model at the real size, measured CPU time per component, and peak
memory against the number of frames. Prints tables; asserts nothing.

Networks: full size (sd-image-variations UNet widths, sd-vae-ft-mse, CLIP ViT-L/14, MusePose's motion
modules and pose guider) with RANDOM weights that share storage per fan-in (``randomise``), so the whole run
stays under 4 GB. Timings are real for these architectures; the images mean nothing.

- One denoising step against upstream (first, ``--steps`` alone): CPU process time, system time and minor
  page faults of one window's step, ours and upstream's alternating, in one fresh process with glibc's
  defaults and one with ``predictors/musepose/allocator.py`` applied; ``--upstream`` (or $MUSEPOSE_UPSTREAM)
  names a TMElyralab/MusePose checkout whose own UNet3D then runs, else a stand-in does (see below).

- Cost model: FLOPs counted by ``torch.utils.flop_counter`` on the meta device (nothing allocated) at
  upstream's default 768x768 with a 48-frame window and CFG, for our scheduling and for upstream's (its
  reference attention projects the reference tokens once per frame and row and recomputes the unconditional
  half; its ReferenceNet runs both CFG rows).
- Time: CPU process time, one thread, on a small latent (``--size`` pixels square, ``--window`` frames).
- Memory: peak RSS of this process after generating N frames (increasing N, fixed window); the growth per
  frame beyond one window is what matters.
- DWPose's real ONNX networks are not available here: its row is the published cost (see bench/pose.py for
  the measured pre/post-processing).
- Several GPUs (``several_gpus``): the window schedule and the modelled speed-up for 1/2/4/8 GPUs at 768x768
  x 300 frames, with the bytes exchanged per step; two gloo ranks against one process on this CPU, measured;
  and, where two GPUs are visible, the 2-GPU row of a GPU check (``two_gpu_check``).

    python -m bench.musepose [--size 128] [--window 4] [--frames 4 10 19] [--repeats 5] [--upstream DIR]
                             [--steps | --several-gpus]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import psutil
import torch
import torch.distributed as dist
from diffusers import AutoencoderKL
from diffusers.models.attention_processor import AttnProcessor2_0
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from predictors.common.video import VideoWriter
from predictors.musepose.allocator import keep_freed_memory
from predictors.musepose.animate import DECODE_CHUNK
from predictors.musepose.distributed import (
    DistributedPipeline,
    Team,
    decode_rounds,
    describe_split,
    split_windows,
)
from predictors.musepose.models import (
    ReferenceBank,
    build_denoising_unet,
    build_pose_guider,
    build_reference_unet,
    install_reference_readers,
    install_reference_writers,
    reference_block_names,
)
from predictors.musepose.models.config import UNET_ADDITIONAL_KWARGS
from predictors.musepose.models.loading import MusePoseModels
from predictors.musepose.models.motion_module import PositionalEncoding, sinusoidal_table
from predictors.musepose.pipeline import (
    MusePosePipeline,
    ReferenceEncoding,
    context_windows,
    padding_repeats,
    to_output_frames,
)
from tools.tiny_weights.musepose import (
    FULL_IMAGE_ENCODER_CONFIG,
    FULL_UNET_CONFIG,
    FULL_VAE_CONFIG,
    IMAGE_ENCODER_CONFIG,
    UNET_CONFIG,
    VAE_CONFIG,
)

REAL_SIZE, REAL_WINDOW = 768, 48
# Published costs of the DWPose ONNX networks per image: YOLOX-L at 640x640, DWPose-L at 384x288 (x2 for
# MusePose's flip test).
DWPOSE_GFLOPS = 155.6 + 2 * 17.4


# ------------------------------------------------------------------------------------------------- models


def randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Materialise a meta-built module on the CPU with random weights that cost almost no memory.

    Every weight matrix or kernel with the same fan-in is a view of one random pool scaled by fan-in ** -0.5,
    so the full-size networks fit in a few hundred MB (the bench stays under 4 GB) while every layer keeps
    its real shape: the kernels, and the scratch buffers they allocate, are the real ones.
    """
    generator = torch.Generator().manual_seed(seed)
    largest: dict[int, int] = {}
    for param in module.parameters():
        if param.ndim > 1:
            fan_in = param[0].numel()
            largest[fan_in] = max(largest.get(fan_in, 0), param.numel())
    pools = {
        fan_in: torch.randn(size, generator=generator).mul_(fan_in**-0.5) for fan_in, size in largest.items()
    }
    for submodule in module.modules():
        for key, param in list(submodule.named_parameters(recurse=False)):
            if param.ndim > 1:
                value = pools[param[0].numel()][: param.numel()].view(param.shape)
            else:
                value = torch.full(param.shape, 1.0 if key == "weight" else 0.0)
            submodule._parameters[key] = torch.nn.Parameter(value, requires_grad=False)
        for key, buffer in list(submodule.named_buffers(recurse=False)):
            if key == "position_ids":  # CLIP's token indices
                value = torch.arange(buffer.shape[-1]).expand(buffer.shape).contiguous()
            else:
                value = torch.zeros(buffer.shape, dtype=buffer.dtype)
            submodule._buffers[key] = value
        if isinstance(submodule, PositionalEncoding):
            submodule.pe = sinusoidal_table(*submodule.pe.shape[1:])
    return module.eval().requires_grad_(False)


def meta_models(
    unet: dict = FULL_UNET_CONFIG, vae: dict = FULL_VAE_CONFIG, encoder: dict = FULL_IMAGE_ENCODER_CONFIG
) -> MusePoseModels:
    with torch.device("meta"):
        return MusePoseModels(
            vae=AutoencoderKL.from_config({k: v for k, v in vae.items() if not k.startswith("_")}),
            image_encoder=CLIPVisionModelWithProjection(CLIPVisionConfig(**encoder)),
            reference_unet=build_reference_unet(unet),
            denoising_unet=build_denoising_unet(unet, UNET_ADDITIONAL_KWARGS),
            pose_guider=build_pose_guider(unet),
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


def unet_flops(size: int, window: int) -> tuple[float, float]:
    """FLOPs of one UNet3D call (a CFG pair of ``window`` frames at ``size`` pixels), ours and upstream's
    (its reference attention), counted on the meta device."""
    models = meta_models()
    latent = size // 8
    device = {"device": "meta"}
    context = torch.zeros(2, 1, 768, **device)
    recorded = install_reference_writers(models.reference_unet)
    models.reference_unet(torch.zeros(1, 4, latent, latent, **device), 0, context[:1])
    bank = ReferenceBank()
    bank.features, bank.first_half_unconditional = dict(recorded), True  # meta tensors of the real shapes
    unet = models.denoising_unet
    sample = torch.zeros(2, 4, window, latent, latent, **device)
    pose = torch.zeros(2, 320, window, latent, latent, **device)
    names = install_reference_readers(unet, bank)
    ours = count_flops(lambda: unet(sample, 999, context, pose))
    modules = dict(unet.named_modules())
    for name in names:
        modules[name].attn1.set_processor(UpstreamReader(bank, name))
    return ours, count_flops(lambda: unet(sample, 999, context, pose))


def cost_model() -> list[tuple[str, float, float]]:
    """(component, our GFLOPs, upstream GFLOPs) at 768x768, a 48-frame window, CFG."""
    models = meta_models()
    latent = REAL_SIZE // 8
    device = {"device": "meta"}
    context = torch.zeros(2, 1, 768, **device)
    rows = []

    two = count_flops(lambda: models.reference_unet(torch.zeros(2, 4, latent, latent, **device), 0, context))
    one = count_flops(
        lambda: models.reference_unet(torch.zeros(1, 4, latent, latent, **device), 0, context[:1])
    )
    rows.append(("ReferenceNet, once per video", one / 1e9, two / 1e9))

    ours, theirs = unet_flops(REAL_SIZE, REAL_WINDOW)
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


# ------------------------------------------------------------------------- one denoising step, upstream
#
# A denoising step of one window (a CFG pair): ours is the window's pose features and our UNet3D call;
# upstream's is its own UNet3DConditionModel with its ReferenceAttentionControl reader (TMElyralab/MusePose,
# ``--upstream`` names a checkout; its models need ``einops``), its pose features computed once per video.
# Without a checkout, a stand-in: our UNet3D with upstream's reference attention (``UpstreamReader``), which
# leaves out the cost of upstream's own layers. Both alternate in one process. Each allocator setting runs in
# a fresh process of its own, because glibc's defaults cannot be put back once mallopt changed them:
# "glibc defaults" is a plain process, "kept" applies predictors/musepose/allocator.py as the predictor does.
# Page faults: ru_minflt of the process per step.

ALLOCATORS = ("glibc defaults", "kept")
UPSTREAM_ENV = "MUSEPOSE_UPSTREAM"
Step = Callable[[], object]


def _reference_features(
    models: MusePoseModels, latent: int, context: torch.Tensor
) -> dict[str, torch.Tensor]:
    reference = randomise(models.reference_unet, 2)
    recorded = install_reference_writers(reference)
    reference(torch.randn(1, 4, latent, latent), 0, context[1:])
    models.reference_unet = reference.to("meta")
    return dict(recorded)


def our_step(size: int, window: int, context: torch.Tensor) -> Step:
    latent = size // 8
    models = meta_models()
    features = _reference_features(models, latent, context)
    unet, guider = randomise(models.denoising_unet, 5), randomise(models.pose_guider, 3)
    bank = ReferenceBank()
    install_reference_readers(unet, bank)
    bank.load(features, first_half_unconditional=True)
    sample, poses = torch.randn(2, 4, window, latent, latent), torch.rand(window, 3, size, size)
    # Ours recomputes the window's pose features at every step.
    return lambda: unet(
        sample, 999, context, guider(poses).transpose(0, 1).unsqueeze(0).repeat(2, 1, 1, 1, 1)
    )


def standin_step(size: int, window: int, context: torch.Tensor) -> Step:
    latent = size // 8
    models = meta_models()
    features = _reference_features(models, latent, context)
    unet = randomise(models.denoising_unet, 5)
    bank = ReferenceBank()
    bank.load(features, first_half_unconditional=True)
    modules = dict(unet.named_modules())
    for name in reference_block_names(unet):
        modules[name].attn1.set_processor(UpstreamReader(bank, name))
    sample, pose = torch.randn(2, 4, window, latent, latent), torch.randn(2, 320, window, latent, latent)
    return lambda: unet(sample, 999, context, pose)


def upstream_step(size: int, window: int, context: torch.Tensor, checkout: str) -> Step:
    """Upstream's UNet3D built as its ``from_pretrained_2d`` builds it; its reader's banks (2 CFG rows of the
    reference's tokens, as its writer records them) are random, of the shapes the blocks see."""
    sys.path.insert(0, checkout)
    from musepose.models.attention import TemporalBasicTransformerBlock
    from musepose.models.mutual_self_attention import ReferenceAttentionControl
    from musepose.models.unet_3d import UNet3DConditionModel

    config = {
        **FULL_UNET_CONFIG,
        "_class_name": "UNet3DConditionModel",
        "down_block_types": ["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"],
        "up_block_types": ["UpBlock3D"] + ["CrossAttnUpBlock3D"] * 3,
        "mid_block_type": "UNetMidBlock3DCrossAttn",
    }
    with torch.device("meta"):
        unet = UNet3DConditionModel.from_config(config, **UNET_ADDITIONAL_KWARGS)
    unet = randomise(unet, 5)
    ReferenceAttentionControl(unet, do_classifier_free_guidance=True, mode="read", fusion_blocks="full")
    latent = size // 8
    sample, pose = torch.randn(2, 4, window, latent, latent), torch.randn(2, 320, window, latent, latent)
    blocks = [module for module in unet.modules() if isinstance(module, TemporalBasicTransformerBlock)]
    shapes = {}
    hooks = [
        block.norm1.register_forward_hook(
            lambda _m, _i, out, block=block: shapes.__setitem__(block, out.shape)
        )
        for block in blocks
    ]
    unet(sample, 999, encoder_hidden_states=context, pose_cond_fea=pose)  # empty banks: learns the shapes
    for hook in hooks:
        hook.remove()
    for block in blocks:
        block.bank = [torch.randn(2, *shapes[block][1:]).half().float()]
    return lambda: unet(sample, 999, encoder_hidden_states=context, pose_cond_fea=pose, return_dict=False)


def step_times(
    size: int, window: int, repeats: int, checkout: str | None
) -> dict[str, list[tuple[float, float, int]]]:
    """(CPU seconds, of which system, minor page faults) per step, ours and upstream's alternating, after one
    warm-up each."""
    context = torch.randn(2, 1, 768, generator=torch.Generator().manual_seed(0))
    times: dict[str, list[tuple[float, float, int]]] = {"upstream": [], "ours": []}
    with torch.no_grad():
        steps = {
            "upstream": upstream_step(size, window, context, checkout)
            if checkout
            else standin_step(size, window, context),
            "ours": our_step(size, window, context),
        }
        for step in steps.values():
            step()
        for _ in range(repeats):
            for which, step in steps.items():
                before = resource.getrusage(resource.RUSAGE_SELF)
                step()
                after = resource.getrusage(resource.RUSAGE_SELF)
                times[which].append(
                    (
                        after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
                        after.ru_stime - before.ru_stime,
                        after.ru_minflt - before.ru_minflt,
                    )
                )
    return times


def step_process(allocator: str, size: int, window: int, repeats: int, checkout: str | None) -> None:
    """The child's side: apply ``allocator``, measure, print the times as one JSON line."""
    torch.set_num_threads(1)
    if allocator == "kept" and not keep_freed_memory():
        raise SystemExit("the allocator settings could not be applied (not glibc?)")
    print(json.dumps(step_times(size, window, repeats, checkout)))


def print_step_rows(size: int, window: int, repeats: int, checkout: str | None) -> None:
    """Runs one child process per allocator setting and prints their rows."""
    upstream = (
        f"upstream's code ({checkout})" if checkout else "a stand-in for upstream (no --upstream given)"
    )
    print(
        f"\nOne denoising step ({window}-frame window, CFG pair, {size}x{size}, full-size random weights),"
        f" CPU process time, 1 thread, {upstream} and ours alternating, medians of n={repeats}:"
    )
    print(
        f"{'allocator':16s} {'':8s} {'CPU s':>7s} {'sys s':>6s} {'faults':>8s}"
        f"   {'upstream / ours (CPU s)':>23s}"
    )
    ours, theirs = unet_flops(size, window)
    print(f"(FLOPs of the UNet3D call at this size: upstream / ours = {theirs / ours:.3f})")
    for allocator in ALLOCATORS:
        command = [sys.executable, "-m", "bench.musepose", "--step-process", allocator]
        command += ["--size", str(size), "--window", str(window), "--repeats", str(repeats)]
        command += ["--upstream", checkout] if checkout else []
        output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
        times = json.loads(output.strip().splitlines()[-1])
        medians = {which: np.median(np.array(rows), axis=0) for which, rows in times.items()}
        for which, (seconds, system, faults) in medians.items():
            ratio = f"{medians['upstream'][0] / seconds:22.2f}x" if which == "ours" else ""
            print(f"{allocator:16s} {which:8s} {seconds:7.2f} {system:6.2f} {faults:8.0f}   {ratio}")


# ------------------------------------------------------------------------------------------ several GPUs
#
# predictors/musepose/distributed.py shares each step's windows over the ranks (one process per GPU) and the
# VAE decode by frames. The model below counts the busiest rank's work from the cost model's FLOPs and adds
# the bytes the ranks exchange; the measured rows run the real Team on gloo processes (CPU) or on two GPUs.

PARALLEL_FRAMES, PARALLEL_STEPS, PARALLEL_OVERLAP = 300, 20, 4
PARALLEL_RANKS = (1, 2, 4, 8)
# Assumptions that turn FLOPs and bytes into seconds: an achieved fp16 rate (an H100 SXM at ~40% of its 989
# TFLOP/s dense peak; a slower GPU only shrinks the share of communication) and NCCL bus bandwidths.
ACHIEVED_FLOPS = 400e12
LINKS = {"NVLink": 450e9, "PCIe 4.0 x16": 24e9}
LATENT_CHANNELS, PIXEL_BYTES = 4, 3 * 4  # decoded frames travel as float32 RGB


def parallel_schedule(length: int = PARALLEL_FRAMES) -> list[list[int]]:
    """The windows of ``length`` frames at the defaults (window 48, overlap 4), padded as the pipeline
    pads."""
    padded = length + padding_repeats(length, REAL_WINDOW, PARALLEL_OVERLAP)
    return context_windows(padded, REAL_WINDOW, PARALLEL_OVERLAP)


def parallel_model(gflops: dict[str, float], length: int = PARALLEL_FRAMES) -> list[dict[str, float]]:
    """Per rank count: the busiest rank's UNet3D calls per step and decoded frames, the bytes exchanged, and
    the modelled time and speed-up (denoise + decode; the ReferenceNet runs on every rank at once)."""
    windows = parallel_schedule(length)
    frames, latent = windows[-1][-1] + 1, REAL_SIZE // 8
    unet = gflops["UNet3D per frame per step (CFG pair)"] + gflops["pose guider per frame"]
    rows = []
    for ranks in PARALLEL_RANKS:
        shares = split_windows(windows, ranks)
        calls = max(len(share) for share in shares)
        busiest = max(sum(len(windows[index]) for index in share) for share in shares)
        decoded = [0] * ranks
        for bounds in decode_rounds(frames, ranks, DECODE_CHUNK):
            for rank, (start, stop) in enumerate(bounds):
                decoded[rank] += stop - start
        # The all-reduced buffer: both CFG rows of the summed predictions, the visit counts and the flag.
        elements = 2 * LATENT_CHANNELS * frames * latent * latent + frames + 1
        ring = 2 * (ranks - 1) / ranks  # share of the buffer each rank sends (and receives) in a ring
        gathered = (frames - decoded[0]) * PIXEL_BYTES * REAL_SIZE * REAL_SIZE
        compute = (
            (
                gflops["ReferenceNet, once per video"]
                + PARALLEL_STEPS * busiest * unet
                + max(decoded) * gflops["VAE decode per frame"]
            )
            * 1e9
            / ACHIEVED_FLOPS
        )
        row = {
            "ranks": ranks,
            "calls": calls,
            "decoded": max(decoded),
            "fp16": 2 * elements,
            "fp32": 4 * elements,
            "sent": ring * 2 * elements,
            "gathered": gathered,
            "compute": compute,
        }
        for link, bandwidth in LINKS.items():
            row[link] = compute + (PARALLEL_STEPS * row["sent"] + gathered) / bandwidth
        rows.append(row)
    for row in rows:
        for link in LINKS:
            row[f"speed-up {link}"] = rows[0][link] / row[link]
    return rows


def print_parallel_model(gflops: dict[str, float]) -> None:
    windows = parallel_schedule()
    frames = windows[-1][-1] + 1
    print(
        f"\nSeveral GPUs: {PARALLEL_FRAMES} frames at {REAL_SIZE}x{REAL_SIZE} (padded to {frames}), window"
        f" {REAL_WINDOW}, overlap {PARALLEL_OVERLAP}, {PARALLEL_STEPS} steps, CFG:"
        f" {len(windows)} windows per step"
    )
    print("windows (frames):", ", ".join(f"{w[0]}-{w[-1]}" for w in windows))
    for ranks in PARALLEL_RANKS[1:]:
        print(f"  {ranks} GPUs: " + describe_split(windows, ranks, "GPU").split("; ", 1)[1])
    rows = parallel_model(gflops)
    print(
        f"\nModel: busiest rank at {ACHIEVED_FLOPS / 1e12:.0f} TFLOP/s achieved, all-reduce once per step"
        f" (ring: each rank sends 2(N-1)/N of the buffer), decoded frames gathered on rank 0 as float32."
    )
    print(
        f"{'GPUs':>4s} {'UNet3D calls':>12s} {'decoded':>7s} {'all-reduce/step':>15s} {'fp32':>8s}"
        f" {'sent/rank/step':>14s} {'gathered':>9s} {'compute s':>9s}"
        + "".join(f" {'x ' + link:>14s}" for link in LINKS)
    )
    for row in rows:
        print(
            f"{row['ranks']:4d} {row['calls']:12d} {row['decoded']:7d} {row['fp16'] / 1e6:12.1f} MB"
            f" {row['fp32'] / 1e6:5.1f} MB {row['sent'] / 1e6:11.1f} MB {row['gathered'] / 1e9:6.2f} GB"
            f" {row['compute']:9.1f}" + "".join(f" {row[f'speed-up {link}']:14.2f}" for link in LINKS)
        )
    print("(UNet3D calls: per rank per step, the busiest rank; decoded: frames on the busiest rank;")
    print(" all-reduce/step: fp16 buffer, fp32 next to it; sent/rank/step: fp16, ring.)")


def random_pipeline(widths: str, dtype: torch.dtype, device: torch.device) -> MusePosePipeline:
    """A pipeline with the same random weights in every process ("full": the real widths; "tiny": the tiny
    weights' widths); a module-level function, so that a Team's workers can build it."""
    configs = {
        "full": (FULL_UNET_CONFIG, FULL_VAE_CONFIG, FULL_IMAGE_ENCODER_CONFIG),
        "tiny": (UNET_CONFIG, VAE_CONFIG, IMAGE_ENCODER_CONFIG),
    }
    models = meta_models(*configs[widths])
    for seed, name in enumerate(("vae", "image_encoder", "reference_unet", "denoising_unet", "pose_guider")):
        setattr(models, name, randomise(getattr(models, name), seed))
    return MusePosePipeline(models.to(device, dtype), device, dtype)


@dataclass
class ReferenceTiming:
    """A job for a Team: every rank runs the ReferenceNet, then rank 0 broadcasts its features; rank 0
    returns (ReferenceNet seconds: CPU time of its thread on a CPU, wall time on a GPU; broadcast wall
    seconds once all ranks are there; feature bytes)."""

    encoding: ReferenceEncoding

    def run(self, pipeline: MusePosePipeline, share) -> tuple[float, float, int]:
        encoding = ReferenceEncoding(
            *(tensor.to(pipeline.device, pipeline.dtype) for tensor in vars(self.encoding).values())
        )
        clock = time.thread_time if pipeline.device.type == "cpu" else time.perf_counter
        _synchronize(pipeline.device)
        start = clock()
        features = pipeline.record_reference(encoding)
        _synchronize(pipeline.device)
        recorded = clock() - start
        dist.barrier()
        start = time.perf_counter()
        for name in sorted(features):
            dist.broadcast(features[name], src=0)
        _synchronize(pipeline.device)
        sent = time.perf_counter() - start
        return recorded, sent, sum(t.numel() * t.element_size() for t in features.values())


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) of this process and ``pids``, threads included."""
    total = time.process_time()
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def measure_ranks(
    devices: list[torch.device],
    widths: str,
    size: int,
    frames: int,
    window: int,
    overlap: int,
    steps: int,
    repeats: int,
) -> None:
    """One process against ``len(devices)`` ranks on the real Team: wall time and CPU time summed over the
    processes (medians of ``repeats`` runs of denoise + decode), the videos' largest difference, and the
    ReferenceNet per rank against broadcasting its features."""
    dtype = torch.float16 if devices[0].type == "cuda" else torch.float32
    build = partial(random_pipeline, widths, dtype)
    team = Team(build, devices)
    team.start()
    try:
        single = build(devices[0])
        team.wait_ready()
        together = DistributedPipeline(single, team)
        rng = np.random.default_rng(0)
        poses = rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
        clip = single.models.image_encoder.config.projection_dim
        noise = torch.Generator().manual_seed(1)
        encoding = ReferenceEncoding(
            clip_embeds=torch.randn(1, 1, clip, generator=noise).to(devices[0], dtype),
            latents=torch.randn(1, 4, size // 8, size // 8, generator=noise).to(devices[0], dtype),
        )
        settings = {"steps": steps, "guidance": 3.5, "window": window, "overlap": overlap}
        pids = [worker.process.pid for worker in team.workers]

        def run(pipeline) -> tuple[float, float, torch.Tensor]:
            _synchronize(devices[0])
            wall, cpu = time.perf_counter(), _cpu_seconds(pids)
            seeded = torch.Generator().manual_seed(3)
            latents = pipeline.denoise(poses, encoding, generator=seeded, **settings)
            videos = torch.cat([chunk.cpu() for chunk in pipeline.decode(latents, DECODE_CHUNK)])
            _synchronize(devices[0])
            return time.perf_counter() - wall, _cpu_seconds(pids) - cpu, videos

        alone = [run(single) for _ in range(repeats)]
        shared = [run(together) for _ in range(repeats)]
        windows = context_windows(frames, settings["window"], settings["overlap"])
        difference = (alone[0][2] - shared[0][2]).abs().max().item()
        print(
            f"\n{len(devices)} ranks on {devices[0].type} ({widths} widths, random weights, {size}x{size},"
            f" {frames} frames = {len(windows)} windows of {settings['window']}, {steps} steps, {dtype}),"
            f" medians of n={repeats}:"
        )
        print(f"{'':12s} {'wall s':>8s} {'CPU s (all processes)':>22s}")
        for name, runs in (("1 process", alone), (f"{len(devices)} ranks", shared)):
            print(
                f"{name:12s} {np.median([r[0] for r in runs]):8.2f} {np.median([r[1] for r in runs]):22.2f}"
            )
        wall_ratio = np.median([r[0] for r in alone]) / np.median([r[0] for r in shared])
        cpu_ratio = np.median([r[1] for r in shared]) / np.median([r[1] for r in alone])
        print(
            f"wall speed-up {wall_ratio:.2f}x; CPU spent {cpu_ratio:.2f}x of one process's;"
            f" videos differ by at most {difference:.2e}"
        )
        job = ReferenceTiming(ReferenceEncoding(encoding.clip_embeds.cpu(), encoding.latents.cpu()))
        timings = [team.submit(job, partial(job.run, single)).result() for _ in range(repeats)]
        recorded, sent, size_bytes = (float(np.median(column)) for column in zip(*timings, strict=True))
        print(
            f"ReferenceNet on each rank: {recorded * 1e3:.1f} ms (CPU: the thread's CPU time; GPU: wall);"
            f" broadcasting its features ({size_bytes / 1e6:.2f} MB) from rank 0:"
            f" {sent * 1e3:.1f} ms (wall, all ranks ready); medians of n={repeats}. Every rank runs it at"
            " the same time, so recording it per rank costs one ReferenceNet of wall time, a broadcast that"
            " plus the transfer."
        )
    finally:
        team.close()


def several_gpus(gflops: dict[str, float]) -> None:
    """The model at the real size, then two gloo ranks against one process on this CPU (tiny widths, 64x64,
    13 frames = 4 windows of 4), then the 2-GPU check where two GPUs are visible."""
    print_parallel_model(gflops)
    measure_ranks([torch.device("cpu")] * 2, "tiny", 64, 13, 4, 1, 2, 5)
    two_gpu_check()


def two_gpu_check() -> None:
    """The 2-GPU row of a GPU check: the real widths at 512x512, 180 frames (4 windows of 48), 4 steps."""
    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        print("\n2-GPU check: skipped (fewer than 2 GPUs visible).")
        return
    measure_ranks([torch.device("cuda", 0), torch.device("cuda", 1)], "full", 512, 180, 48, 4, 4, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=128, help="square generation size in pixels (CPU rows)")
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--overlap", type=int, default=1)
    parser.add_argument("--frames", type=int, nargs="+", default=[4, 10, 19])
    parser.add_argument("--repeats", type=int, default=5, help="n of the denoising-step rows")
    parser.add_argument(
        "--several-gpus", action="store_true", help="only the cost model and the several-GPU section"
    )
    parser.add_argument("--steps", action="store_true", help="only the denoising-step rows")
    parser.add_argument(
        "--upstream",
        default=os.environ.get(UPSTREAM_ENV) or None,
        help=f"a TMElyralab/MusePose checkout for the step rows (needs einops; default ${UPSTREAM_ENV})",
    )
    parser.add_argument("--step-process", choices=ALLOCATORS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    if args.step_process:
        step_process(args.step_process, args.size, args.window, args.repeats, args.upstream)
        return
    print_step_rows(args.size, args.window, args.repeats, args.upstream)
    if args.steps:
        return

    print(f"Cost model at {REAL_SIZE}x{REAL_SIZE}, window {REAL_WINDOW}, CFG (GFLOPs):")
    print(f"{'component':40s} {'ours':>10s} {'upstream':>10s} {'ratio':>6s}")
    costs = cost_model()
    for name, ours, theirs in costs:
        print(f"{name:40s} {ours:10.1f} {theirs:10.1f} {theirs / ours:6.2f}")
    several_gpus({name: ours for name, ours, _ in costs})
    if args.several_gpus:
        return

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
            for chunk in pipeline.decode(latents, DECODE_CHUNK):
                to_output_frames(chunk, (size, size))
        windows = len(context_windows(padded, window, args.overlap))
        seconds = time.process_time() - start
        print(f"{count:6d} {padded:6d} {windows:7d} {memory.start:10.0f} {memory.peak:8.0f} {seconds:8.1f}")


if __name__ == "__main__":
    main()
