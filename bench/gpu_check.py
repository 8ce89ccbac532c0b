"""One GPU check: what each predictor costs on this card, in one table, from full-size RANDOM weights.

    python -m bench.gpu_check            # on a GPU host (make gpu-check): full sizes, about 8 minutes at most
    python -m bench.gpu_check --dry      # anywhere: tiny sizes, the same code, every row (the tests run it)

Nothing is downloaded: every network is built from its real configuration with random weights, so timings
and memory are those of the real architectures and the images mean nothing.

- nst: VGG19 at full width (torchvision's layout), one L-BFGS iteration of the core's objective at 1024² and
  2048², the VGG pass in fp32 and under bf16 autocast (Gram matrices and losses stay fp32 either way).
- sd_style: the real UNet configs of SD1.5 and SDXL base (``bench/configs/``, the published files), the Canny
  ControlNet derived from each (diffusers' ``from_unet`` gives the published parameter counts) and an
  IP-Adapter at the published shapes, fp16 with PyTorch's SDPA attention. One step is ControlNet + UNet. The
  default job runs ``DEFAULT_STEPS`` steps with classifier-free guidance (two rows); turbo runs
  ``TURBO_STEPS`` LCM steps at guidance 1 (one row). A fused LoRA leaves the UNet's cost unchanged, so both
  modes time the same networks and an image costs steps x seconds per step.
- musepose: the core's pipeline at full width (``bench.musepose.random_pipeline``), one 48-frame window with
  classifier-free guidance, against the VRAM upstream's README publishes (16 GB at 512², 28 GB at 768², both
  48 frames; it publishes no speed, so the speed goal has no published baseline to be measured against).
- DWPose: the pose network's ONNX stand-in at the real input/output shapes carrying a convolution stack of
  DWPose-L's published 17.4 GFLOPs per crop (``tools/tiny_weights/dwpose.py``); two crops per frame (the
  flip test), one call per frame against batches of 16, on the providers the project's session helper loads.

Times: CUDA events on a GPU (ONNX Runtime's synchronous calls: wall time), CPU process time in the dry run;
medians of ``repeats`` after one warm-up. Peak memory: ``torch.cuda.max_memory_allocated`` per row on a GPU,
the process's peak RSS on the CPU. A time budget guard skips what is left once the budget is spent, and a
row that fails says why; the table is printed either way.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

CONFIGS = Path(__file__).resolve().parent / "configs"
# Upstream MusePose's README ("Reducing VRAM cost"): 16 GB at 512x512x48, 28 GB at 768x768x48.
UPSTREAM_VRAM_GB = {512: 16, 768: 28}
VRAM_GOAL_GB = {768: 24}
# DWPose-L (RTMPose-l, 384x288) per crop, as published by its authors.
DWPOSE_GFLOPS = 17.4
POSE_CROP = (384, 288)
SKIPPED = "skipped: time budget spent"


@dataclass(frozen=True)
class SdCase:
    label: str
    unet_config: dict
    size: int
    image_embed_dim: int  # the IP-Adapter image encoder's projection (ViT-H: 1024)


@dataclass(frozen=True)
class Plan:
    """What one run measures: the full plan on a GPU, the dry plan (same code, tiny sizes) anywhere."""

    nst_sizes: tuple[int, ...]
    vgg_widths: tuple[int, ...]
    sd_cases: tuple[SdCase, ...]
    musepose_widths: str  # "full" or "tiny", as bench.musepose.random_pipeline names them
    musepose_sizes: tuple[int, ...]
    window: int
    musepose_steps: int
    pose_frames: int
    pose_gflops: float
    repeats: int
    budget_s: float


def _config(name: str) -> dict:
    return json.loads((CONFIGS / name).read_text())


def full_plan() -> Plan:
    from tools.tiny_weights.vgg19 import FULL_BLOCK_WIDTHS

    return Plan(
        nst_sizes=(1024, 2048),
        vgg_widths=FULL_BLOCK_WIDTHS,
        sd_cases=(
            SdCase("SD1.5", _config("sd15_unet.json"), 768, 1024),
            SdCase("SDXL", _config("sdxl_unet.json"), 1024, 1024),
        ),
        musepose_widths="full",
        musepose_sizes=(512, 768),
        window=48,
        musepose_steps=2,
        pose_frames=16,
        pose_gflops=DWPOSE_GFLOPS,
        repeats=3,
        budget_s=420.0,
    )


def dry_plan() -> Plan:
    from tools.tiny_weights import sd15, sdxl
    from tools.tiny_weights.vgg19 import TINY_BLOCK_WIDTHS

    return Plan(
        nst_sizes=(32, 64),
        vgg_widths=TINY_BLOCK_WIDTHS,
        sd_cases=(SdCase("SD1.5", sd15.UNET_CONFIG, 64, 16), SdCase("SDXL", sdxl.UNET_CONFIG, 64, 16)),
        musepose_widths="tiny",
        musepose_sizes=(32, 64),
        window=4,
        musepose_steps=1,
        pose_frames=2,
        pose_gflops=0.01,
        repeats=1,
        budget_s=300.0,
    )


@dataclass
class Row:
    name: str
    value: str
    peak: str = ""
    note: str = ""


@dataclass
class Check:
    """The device, its clock, the budget and the rows measured so far."""

    device: torch.device
    plan: Plan
    started: float = field(default_factory=time.monotonic)
    rows: list[Row] = field(default_factory=list)

    @property
    def dtype(self) -> torch.dtype:
        # fp16 is what the predictors run on a GPU; many CPU kernels lack it, so the dry run stays in fp32.
        return torch.float16 if self.device.type == "cuda" else torch.float32

    def spent(self) -> bool:
        return time.monotonic() - self.started > self.plan.budget_s

    def seconds(self, function: Callable[[], object], *, wall: bool = False) -> float:
        """Median seconds of ``function`` over ``plan.repeats`` runs after one warm-up (fewer once the
        budget is spent): CUDA events on a GPU, CPU process time on the CPU, wall time when ``wall``."""
        function()
        times = []
        for _ in range(self.plan.repeats):
            if times and self.spent():
                break
            times.append(self._once(function, wall))
        return statistics.median(times)

    def _once(self, function: Callable[[], object], wall: bool) -> float:
        if wall:
            start = time.perf_counter()
            function()
            return time.perf_counter() - start
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            function()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000
        start = time.process_time()
        function()
        return time.process_time() - start

    @contextlib.contextmanager
    def peak(self) -> Iterator[list[str]]:
        """Yields a list that holds, once the block ends, the peak memory of the block as text."""
        holder: list[str] = []
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            yield holder
        finally:
            if self.device.type == "cuda":
                holder.append(f"{torch.cuda.max_memory_allocated(self.device) / 2**30:.2f} GiB")
            else:
                holder.append(f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB RSS")

    def section(self, name: str, measure: Callable[[Check], None]) -> None:
        """Run one predictor's rows; a failure or a spent budget becomes a row instead of ending the run."""
        if self.spent():
            self.rows.append(Row(name, SKIPPED))
            return
        try:
            # The cores print progress and logs on stdout; the table is the only thing printed there.
            with contextlib.redirect_stdout(sys.stderr):
                measure(self)
        except Exception as error:  # one broken section must not hide the others' rows
            self.rows.append(Row(name, f"failed: {type(error).__name__}: {str(error).splitlines()[0][:120]}"))
        finally:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()


# -------------------------------------------------------------------------------------------- the machine


def _driver() -> str:
    if shutil.which("nvidia-smi") is None:
        return "n/a"
    command = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    return (
        result.stdout.strip().splitlines()[0] if result.returncode == 0 and result.stdout.strip() else "n/a"
    )


def machine_rows(check: Check) -> None:
    if check.device.type == "cuda":
        card = torch.cuda.get_device_name(check.device)
        total = torch.cuda.get_device_properties(check.device).total_memory / 2**30
        check.rows.append(Row("card", f"{card}, {total:.0f} GiB"))
    else:
        check.rows.append(Row("card", "none: CPU dry run (tiny sizes)"))
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    check.rows.append(Row("driver, CUDA", f"driver {_driver()}, CUDA {torch.version.cuda}, cuDNN {cudnn}"))
    check.rows.append(Row("torch", torch.__version__))


# -------------------------------------------------------------------------------------------------- nst


def nst_rows(check: Check) -> None:
    """s/iteration of the nst core's default objective, the VGG pass in fp32 and in bf16 autocast (the core's
    Gram matrices and losses are fp32 either way)."""
    from predictors.nst.objective import CONTENT_LAYER, STYLE_LAYERS, STYLE_WEIGHT, Objective, style_targets
    from predictors.nst.optimize import Optimization, prepare_for_device
    from predictors.nst.vgg import VGGFeatures
    from tools.tiny_weights.vgg19 import tiny_vgg19_state_dict

    state = tiny_vgg19_state_dict(seed=0, block_widths=check.plan.vgg_widths)
    vgg = VGGFeatures(state, (*STYLE_LAYERS, CONTENT_LAYER)).to(check.device)
    prepare_for_device(vgg)
    weights = {"content_weight": 1.0, "style_weight": STYLE_WEIGHT, "tv_weight": 1.0}
    generator = torch.Generator().manual_seed(0)
    note = "L-BFGS, one objective evaluation"
    if check.device.type == "cuda":
        # torch's default lets cuDNN run fp32 convolutions in TF32 on Ampere and later: what production runs.
        note += f"; cuDNN TF32 {'on' if torch.backends.cudnn.allow_tf32 else 'off'}"
    for size in check.plan.nst_sizes:
        for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            name = f"nst s/iteration {size}² {precision}"
            if check.spent():
                check.rows.append(Row(name, SKIPPED))
                continue
            content = torch.rand(1, 3, size, size, generator=generator).to(check.device)
            style = torch.rand(1, 3, size, size, generator=generator).to(check.device)
            with check.peak() as peak:
                grams = style_targets(vgg, [style], [1.0], (size, size), 1.0, dtype)
                objective = Objective(vgg, content, grams, **weights, dtype=dtype)
                optimization = Optimization(objective, content, "lbfgs")
                seconds = check.seconds(optimization.step)
            check.rows.append(Row(name, f"{seconds:.4f}", peak[0], note))
            del optimization, objective, grams


# --------------------------------------------------------------------------------------------- sd_style


def _sd_models(case: SdCase, check: Check):
    """UNet (with an IP-Adapter at the published shapes) and its Canny ControlNet, random, on the device."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    from tools.tiny_weights.sd15 import ip_adapter_tensors

    config = {key: value for key, value in case.unet_config.items() if not key.startswith("_")}
    # Built on the device: a full-size SDXL UNet initialised on the CPU takes minutes.
    with torch.device(check.device):
        unet = UNet2DConditionModel.from_config(config)
        controlnet = ControlNetModel.from_unet(unet, load_weights_from_unet=False)
    adapter = ip_adapter_tensors(unet, case.image_embed_dim, seed=0, salt=0)
    unet._load_ip_adapter_weights([adapter], low_cpu_mem_usage=False)
    return (
        unet.to(check.device, check.dtype).eval(),
        controlnet.to(check.device, check.dtype).eval(),
    )


def _sd_step(unet, controlnet, case: SdCase, rows: int, check: Check) -> Callable[[], object]:
    """One denoising step of ``rows`` rows (2 with classifier-free guidance) at ``case.size``."""
    config, latent = unet.config, case.size // 8
    options = {"device": check.device, "dtype": check.dtype}
    sample = torch.randn(rows, 4, latent, latent, **options)
    text = torch.randn(rows, 77, config.cross_attention_dim, **options)
    control = torch.rand(rows, 3, case.size, case.size, **options)
    timestep = torch.tensor(500, device=check.device)
    added: dict[str, torch.Tensor] = {}
    if config.addition_embed_type == "text_time":
        pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        added = {
            "text_embeds": torch.randn(rows, pooled, **options),
            "time_ids": torch.randn(rows, 6, **options),
        }
    image_embeds = [torch.randn(rows, 1, case.image_embed_dim, **options)]

    @torch.inference_mode()
    def step() -> object:
        down, mid = controlnet(
            sample, timestep, text, controlnet_cond=control, added_cond_kwargs=added, return_dict=False
        )
        return unet(
            sample,
            timestep,
            text,
            added_cond_kwargs={**added, "image_embeds": image_embeds},
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
            return_dict=False,
        )

    return step


def sd_rows(check: Check) -> None:
    # The product's step counts: the default job with guidance, turbo's LCM steps at guidance 1.
    from predictors.sd_style.pipeline import DEFAULT_STEPS, TURBO_STEPS

    for case in check.plan.sd_cases:
        label = f"sd_style {case.label} {case.size}²"
        if check.spent():
            check.rows.append(Row(label, SKIPPED))
            continue
        unet, controlnet = _sd_models(case, check)
        attention = sorted({type(p).__name__ for p in unet.attn_processors.values()})
        # After the build: the peak is the fp16 weights and one step's activations, not the fp32 build.
        with check.peak() as peak:
            cfg = check.seconds(_sd_step(unet, controlnet, case, 2, check))
            single = check.seconds(_sd_step(unet, controlnet, case, 1, check))
        note = f"ControlNet + UNet; attention: {', '.join(attention)}"
        check.rows.append(Row(f"{label} s/step, guidance (2 rows)", f"{cfg:.4f}", peak[0], note))
        check.rows.append(Row(f"{label} s/step, turbo (1 row)", f"{single:.4f}", peak[0], note))
        default, turbo = DEFAULT_STEPS * cfg, TURBO_STEPS * single
        check.rows.append(Row(f"{label} s/image default ({DEFAULT_STEPS} steps)", f"{default:.3f}"))
        check.rows.append(
            Row(f"{label} s/image turbo ({TURBO_STEPS} steps)", f"{turbo:.3f}", "", f"{default / turbo:.1f}x")
        )
        del unet, controlnet


# --------------------------------------------------------------------------------------------- musepose


def _musepose_row(check: Check, pipeline, size: int) -> Row:
    """One window of ``plan.window`` frames at ``size``², denoised with CFG, then one decode chunk."""
    from predictors.musepose.animate import DECODE_CHUNK
    from predictors.musepose.pipeline import ReferenceEncoding

    plan = check.plan
    options = {"device": check.device, "dtype": check.dtype}
    latent = size // 8
    clip_dim = pipeline.models.image_encoder.config.projection_dim
    encoding = ReferenceEncoding(
        clip_embeds=torch.randn(1, 1, clip_dim, **options),
        latents=torch.randn(1, 4, latent, latent, **options),
    )
    poses = np.zeros((plan.window, size, size, 3), dtype=np.uint8)
    latents: list[torch.Tensor] = []
    with check.peak() as peak:
        features = pipeline.record_reference(encoding)

        def denoise() -> None:
            latents[:] = [
                pipeline.denoise(
                    poses,
                    encoding,
                    steps=plan.musepose_steps,
                    guidance=3.5,
                    window=plan.window,
                    overlap=0,
                    generator=torch.Generator().manual_seed(0),
                    reference_features=features,
                )
            ]

        seconds = check.seconds(denoise)
        next(pipeline.decode(latents[0], DECODE_CHUNK))  # the decode's peak counts too
    notes = [f"CFG, {plan.musepose_steps} step(s) per run"]
    if size in UPSTREAM_VRAM_GB:
        notes.append(f"upstream's README: {UPSTREAM_VRAM_GB[size]} GB")
    if size in VRAM_GOAL_GB:
        notes.append(f"goal <= {VRAM_GOAL_GB[size]} GB")
    per_frame_step = seconds / (plan.window * plan.musepose_steps)
    name = f"musepose s/frame/step {size}², {plan.window} frames"
    return Row(name, f"{per_frame_step:.4f}", peak[0], "; ".join(notes))


def musepose_rows(check: Check) -> None:
    from bench.musepose import random_pipeline

    pipeline = random_pipeline(check.plan.musepose_widths, check.dtype, check.device)
    for size in check.plan.musepose_sizes:
        if check.spent():
            check.rows.append(Row(f"musepose s/frame/step {size}², {check.plan.window} frames", SKIPPED))
        else:
            check.rows.append(_musepose_row(check, pipeline, size))
    check.rows.append(Row("musepose upstream speed", "none published", "", "its README gives VRAM only"))


# ----------------------------------------------------------------------------------------------- DWPose


def dwpose_rows(check: Check) -> None:
    import onnxruntime as ort

    from predictors.common.dwpose.estimator import PoseEstimator
    from predictors.common.onnx import create_session
    from tools.tiny_weights import dwpose as standins

    plan = check.plan
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        path = Path(folder) / "pose.onnx"
        standins.write_pose_model(path, dynamic_batch=True, extra_gflops=plan.pose_gflops)
        session = create_session(path)
        loaded = session.get_providers()
        check.rows.append(
            Row(
                "ONNX Runtime providers", ", ".join(loaded), "", f"available: {ort.get_available_providers()}"
            )
        )
        estimator = PoseEstimator(session, max_batch=16)
        crops = np.random.default_rng(0).normal(size=(2 * plan.pose_frames, 3, *POSE_CROP)).astype(np.float32)

        def per_frame() -> None:
            for start in range(0, len(crops), 2):
                estimator.run(crops[start : start + 2])

        single = check.seconds(per_frame, wall=True) / plan.pose_frames
        batched = check.seconds(lambda: estimator.run(crops), wall=True) / plan.pose_frames
    note = f"{loaded[0]}, {plan.pose_gflops:g} GFLOPs per crop, 2 crops per frame"
    check.rows.append(Row("DWPose s/frame, one call per frame", f"{single:.4f}", "", note))
    check.rows.append(Row("DWPose s/frame, batches of 16", f"{batched:.4f}", "", f"{single / batched:.2f}x"))


SECTIONS = (("nst", nst_rows), ("sd_style", sd_rows), ("musepose", musepose_rows), ("DWPose", dwpose_rows))


def table(rows: list[Row]) -> str:
    lines = ["| check | value | peak memory | note |", "|---|---|---|---|"]
    lines += [f"| {row.name} | {row.value} | {row.peak} | {row.note} |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="tiny sizes on the CPU: every row, in seconds")
    args = parser.parse_args(argv)
    if not args.dry and not torch.cuda.is_available():
        parser.error("no CUDA device here: run it on a GPU host, or --dry for the CPU dry run")
    plan = dry_plan() if args.dry else full_plan()
    device = torch.device("cpu" if args.dry else "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    check = Check(device, plan)
    machine_rows(check)
    for name, measure in SECTIONS:
        check.section(name, measure)
    elapsed = time.monotonic() - check.started
    print(f"# GPU check{' (dry run)' if args.dry else ''}: {elapsed:.0f} s, budget {plan.budget_s:.0f} s\n")
    print(table(check.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
