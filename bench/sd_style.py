"""Benchmark of the sd_style predictor on full-size SD1.5-shaped random weights (never run in CI).

    .venv/bin/python -m bench.sd_style [--root .cache/bench-sd15-full] [--threads 2]

Writes, once, a weights root in the real layout with random weights of the real SD1.5 shapes (UNet, VAE, text
encoder, canny and tile ControlNets, IP-Adapter, ViT-H image encoder, safety checker; about 7 GB), from the
reference configs in ``../shared/reference/sd``. Then it measures, in one run:
- setup() from that local root (first start, which hashes the files, and a warm start);
- our predictor against diffusers' stock pipeline called directly, same weights, steps and size;
- the style-embedding cache on a repeated style, and what fusing the turbo LoRA in and out costs;
- at one size (256x256 by default: a 512x512 step takes minutes on a small CPU), whole jobs: the seed
  project's job (two ControlNet passes of 30 steps at CFG 8) done the seed's way (diffusers' pipelines
  called directly, the IP-Adapter reloaded and the style encoded on every call) and through our pipeline
  (implementation cost), our default job against it (fewer steps by design), and turbo against our default.
Every comparison is CPU process time, the sides alternating within one run, medians and n given.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from predictors.common import manifest as manifests
from predictors.sd_style.pipeline import (
    DEFAULT_GUIDANCE,
    DEFAULT_STEPS,
    TURBO_GUIDANCE,
    TURBO_LORA_WEIGHT,
    TURBO_STEPS,
    canny_edges,
)
from tools.tiny_weights import environment, write_manifest
from tools.tiny_weights import sd15 as layout
from tools.tiny_weights.lora import PUBLISHED_RANK, write_lcm_lora

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("TRIPTYCH_SHARED", REPO_ROOT.parent / "shared")) / "reference" / "sd"
# The seed project's job: two ControlNet passes of 30 steps at CFG 8 (the second img2img over the first).
SEED_PASSES, SEED_STEPS, SEED_GUIDANCE = 2, 30, 8.0
IP_ADAPTER = "ip-adapter_sd15.safetensors"


# The config entries that set a model's widths: scaled by --width, depths and head counts kept.
WIDTH_KEYS = (
    "block_out_channels",
    "cross_attention_dim",
    "hidden_size",
    "intermediate_size",
    "projection_dim",
)


def _config(relative: str, width: float = 1.0) -> dict:
    config = json.loads((REFERENCE / relative).read_text())
    # Building random models: a stored torch_dtype would mix half and float parameters.
    config = {
        k: v for k, v in config.items() if not k.startswith("_") and k not in ("torch_dtype", "architectures")
    }
    return _scaled(config, width)


def _scaled(config: dict, width: float) -> dict:
    """``config`` with every width entry times ``width`` (nested configs too)."""
    scaled = {}
    for key, value in config.items():
        if isinstance(value, dict):
            value = _scaled(value, width)
        elif key in WIDTH_KEYS:
            value = [round(v * width) for v in value] if isinstance(value, list) else round(value * width)
        scaled[key] = value
    return scaled


def write_full_root(root: Path, width: float = 1.0) -> None:
    """The SD1.5 style-transfer weights root with random weights of the real shapes (``width`` below 1:
    the real block structure, depths and head counts at that fraction of the widths, for a machine short of
    memory: the models then take about width^2 of their memory and compute)."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import (
        CLIPConfig,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    base = root / layout.BASE
    layout.write_json(base / "model_index.json", layout.MODEL_INDEX)
    layout.write_json(base / "scheduler" / "scheduler_config.json", layout.SCHEDULER_CONFIG)
    layout.write_json(
        base / "feature_extractor" / "preprocessor_config.json", layout.FEATURE_EXTRACTOR_CONFIG
    )
    layout.write_tokenizer(base / "tokenizer")
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(**_config("sd15_runwayml/text_encoder/config.json", width)))
    layout.save_fp16_variant(text_encoder, base / "text_encoder")
    del text_encoder
    unet = UNet2DConditionModel(**_config("sd15_runwayml/unet/config.json", width))
    vision = _config("h94_IP-Adapter__models__image_encoder__config.json", width)
    adapter = layout.ip_adapter_tensors(unet, vision["projection_dim"], 0, 1)
    layout.write_ip_adapter(
        root / layout.IP_ADAPTER_ROOT / "models", "ip-adapter_sd15", adapter, with_bin=False
    )
    write_lcm_lora(root / layout.LCM_LORA, unet, 0, rank=PUBLISHED_RANK)
    layout.save_fp16_variant(unet, base / "unet")
    del unet
    layout.save_fp16_variant(AutoencoderKL(**_config("sd15_runwayml/vae/config.json", width)), base / "vae")
    controlnet_config = _config("controlnet/control_v11p_sd15_canny.config.reconstructed.json", width)
    for dest in (layout.CANNY, layout.TILE):
        layout.save_fp16_variant(ControlNetModel(**controlnet_config), root / dest)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**vision))
    encoder.save_pretrained(root / layout.IMAGE_ENCODER, safe_serialization=True)  # fp32, as h94 stores it
    del encoder
    checker_config = _config("sd15_runwayml/safety_checker/config.json", width)
    checker = StableDiffusionSafetyChecker(
        CLIPConfig(
            text_config=_strip(checker_config["text_config"]),
            vision_config=_strip(checker_config["vision_config"]),
            projection_dim=checker_config["projection_dim"],
        )
    )
    layout.save_fp16_variant(checker, base / "safety_checker")
    write_manifest(root)


def _strip(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in ("torch_dtype", "architectures", "_name_or_path")}


def _picture(seed: int, size: int = 512) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = np.full((size, size, 3), 90, np.uint8)
    pixels[size // 4 : size // 2, size // 5 : size // 2] = 230
    return Image.fromarray(pixels + rng.integers(0, 20, pixels.shape, dtype=np.uint8))


def _timed(function, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - started, result


def _cpu_seconds(function) -> float:
    """CPU time of this process (every thread) spent in ``function()``: unlike wall time, other jobs on the
    machine do not inflate it."""
    started = time.process_time()
    function()
    return time.process_time() - started


def alternate(calls: dict, trials: int) -> dict[str, list[float]]:
    """CPU seconds of each call, ``trials`` times, the order rotating every trial so that a drift of the
    machine favours none of them."""
    names = list(calls)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for trial in range(trials):
        for name in names[trial % len(names) :] + names[: trial % len(names)]:
            seconds[name].append(_cpu_seconds(calls[name]))
    return seconds


def ratio_row(label: str, ours: list[float], other: list[float]) -> tuple[str, str]:
    """``label`` with both medians, n and the ratio other / ours (above 1: ours is faster)."""
    a, b = statistics.median(ours), statistics.median(other)
    return label, f"{a:.1f} s vs {b:.1f} s, median of {len(ours)}: {b / a:.2f}x"


def _predict_inputs(predictor, folder: Path, seed: int, **inputs) -> dict:
    from tools.cog_runtime import input_defaults

    content, style = folder / "content.png", folder / f"style-{seed}.png"
    _picture(1).save(content)
    _picture(seed).save(style)
    return {**input_defaults(type(predictor)), "image": content, "style_image": style, "seed": 1, **inputs}


def _job(content: Image.Image, style: Image.Image, **changes):
    """A job as the API's defaults make it (the core has no defaults of its own)."""
    from predictors.sd_style.pipeline import Job
    from predictors.sd_style.predict import Predictor
    from tools.cog_runtime import input_defaults

    defaults = {
        name: value for name, value in input_defaults(Predictor).items() if name in Job.__annotations__
    }
    settings = {"image": content, "style_images": [style], "style_weights": None, "seed": 1}
    return Job(**{**defaults, **settings, **changes})


def stock_rows(predictor, size: int, trials: int) -> list[tuple[str, str]]:
    """predict() against diffusers' stock pipeline called directly (same modules, steps and size, a new style
    image each call), and predict()'s time outside the core (decode, resize, save)."""
    from diffusers import DPMSolverMultistepScheduler

    sp = predictor.pipeline
    folder = Path(tempfile.mkdtemp(prefix="bench-sd-style-"))
    stock = type(sp.txt2img)(**sp.txt2img.components)
    stock.set_progress_bar_config(disable=True)
    stock.scheduler = DPMSolverMultistepScheduler.from_config(
        sp.txt2img.scheduler.config, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True
    )
    settings = {"num_inference_steps": 2, "max_side": size, "disable_safety_checker": True}
    # One untimed call first: the first run at a new size pays for kernel set-up.
    predictor.predict(**_predict_inputs(predictor, folder, 99, **settings))
    ours_inputs = iter(
        [_predict_inputs(predictor, folder, 100 + t, output_format="png", **settings) for t in range(trials)]
    )
    stock_styles = iter([_picture(200 + t) for t in range(trials)])
    control = canny_edges(_picture(1).resize((size, size)), 100, 200)

    def run_stock():
        stock.set_ip_adapter_scale({"up": {"block_1": [1.0, 1.0, 1.0]}})
        stock(
            prompt="",
            image=control,
            height=size,
            width=size,
            num_inference_steps=2,
            guidance_scale=6.0,
            controlnet_conditioning_scale=0.75,
            ip_adapter_image=next(stock_styles),
            generator=torch.Generator().manual_seed(1),
        ).images[0].save(folder / "stock.png")

    core_seconds, core_run = [], sp.run

    def timed_core_run(*run_args, **run_kwargs):
        started = time.process_time()
        images = core_run(*run_args, **run_kwargs)
        core_seconds.append(time.process_time() - started)
        return images

    sp.run = timed_core_run  # predict() calls the core through this attribute
    try:
        seconds = alternate(
            {"ours": lambda: predictor.predict(**next(ours_inputs)), "stock": run_stock}, trials
        )
    finally:
        sp.run = core_run
    outside = statistics.median(a - b for a, b in zip(seconds["ours"], core_seconds, strict=True))
    return [
        ratio_row(f"predict() vs stock pipeline, {size}^2, 2 steps", seconds["ours"], seconds["stock"]),
        ("  predict() time outside the core (decode, resize, save)", f"{outside:.3f} s"),
    ]


def lora_switch_row(sp, root: Path) -> tuple[str, str]:
    """What switching modes per request would cost instead of the second UNet: the LCM-LoRA, loaded, fused
    into the UNet and unfused again (on a copy, so the predictor's UNets stay as they are)."""
    pipe = type(sp.txt2img).from_pipe(sp.txt2img, unet=copy.deepcopy(sp.txt2img.unet))
    pipe.load_lora_weights(
        str(root / layout.LCM_LORA),
        weight_name=TURBO_LORA_WEIGHT,
        adapter_name="turbo",
        local_files_only=True,
    )
    fuse = _cpu_seconds(lambda: pipe.fuse_lora(components=["unet"]))
    unfuse = _cpu_seconds(lambda: pipe.unfuse_lora(components=["unet"]))
    return "LCM-LoRA fuse + unfuse once (a per-request switch would pay it)", f"{fuse:.2f} s + {unfuse:.2f} s"


def seed_job_rows(sp, root: Path, size: int, trials: int) -> list[tuple[str, str]]:
    """The seed's job (SEED_PASSES ControlNet passes of SEED_STEPS steps at CFG SEED_GUIDANCE, the second
    img2img over the first) the seed's way (diffusers' pipelines called directly, the IP-Adapter reloaded and
    the style image encoded on every call) and through our pipeline; our default and turbo jobs."""
    content, style = _picture(1).resize((size, size)), _picture(300)
    control = canny_edges(content, 100, 200)
    txt2img = type(sp.txt2img)(**sp.txt2img.components)
    img2img = type(sp.img2img)(**sp.img2img.components)
    for pipe in (txt2img, img2img):
        pipe.set_progress_bar_config(disable=True)
    # img2img at strength 1/2 of twice the steps runs SEED_STEPS denoising steps, as the first pass does.
    second = {"num_inference_steps": 2 * SEED_STEPS, "guidance_scale": SEED_GUIDANCE}

    def seed_way():
        common = {"prompt": "", "guidance_scale": SEED_GUIDANCE, "ip_adapter_image": style, "height": size}
        txt2img.load_ip_adapter(
            str(root / layout.IP_ADAPTER_ROOT),
            subfolder="models",
            weight_name=IP_ADAPTER,
            local_files_only=True,
        )
        txt2img.set_ip_adapter_scale(1.0)
        first = txt2img(image=control, num_inference_steps=SEED_STEPS, width=size, **common).images
        img2img.set_ip_adapter_scale(1.0)
        img2img(image=first, control_image=control, strength=0.5, width=size, **{**common, **second})

    def ours_seed_job():
        job = {"style_mode": "full", "negative_prompt": "", "style_strength": 1.0}
        first = sp.run(
            _job(content, style, num_inference_steps=SEED_STEPS, guidance_scale=SEED_GUIDANCE, **job)
        )
        sp.run(_job(first[0], style, denoise_strength=0.5, **second, **job))

    seconds = alternate(
        {
            "seed": seed_way,
            "ours_seed": ours_seed_job,
            "default": lambda: sp.run(_job(content, style)),
            "turbo": lambda: sp.run(_job(content, style, turbo=True)),
        },
        trials,
    )
    job = f"{SEED_PASSES} passes x {SEED_STEPS} steps, CFG {SEED_GUIDANCE:g}, {size}^2"
    return [
        ratio_row(
            f"seed's job ({job}): our pipeline vs the seed's way", seconds["ours_seed"], seconds["seed"]
        ),
        ratio_row(
            f"our default (1 pass x {DEFAULT_STEPS} steps, CFG {DEFAULT_GUIDANCE:g}) vs the seed's job "
            "through our pipeline: fewer steps by design",
            seconds["default"],
            seconds["ours_seed"],
        ),
        ratio_row(
            f"turbo (LCM-LoRA, {TURBO_STEPS} steps, guidance {TURBO_GUIDANCE:g}) vs our default, per image",
            seconds["turbo"],
            seconds["default"],
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, help="default: .cache/bench-sd15-full (or -w<width>)")
    parser.add_argument("--width", type=float, default=1.0, help="fraction of the real widths (memory)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=256, help="side of the square jobs of the job rows")
    parser.add_argument("--overhead-size", type=int, default=128)
    parser.add_argument("--trials", type=int, default=3, help="alternating runs of each side")
    args = parser.parse_args(argv)
    args.root = args.root or REPO_ROOT / ".cache" / (
        "bench-sd15-full" if args.width == 1 else f"bench-sd15-w{args.width:g}"
    )
    torch.set_num_threads(args.threads)
    if not REFERENCE.is_dir():
        print(f"reference configs not found at {REFERENCE}; set TRIPTYCH_SHARED", file=sys.stderr)
        return 1
    rows: list[tuple[str, str]] = []

    if not (args.root / "weights_manifest.json").is_file():
        seconds, _ = _timed(write_full_root, args.root, args.width)
        rows.append(("write full-size random root (once)", f"{seconds:.1f} s"))
    os.environ.update(environment(args.root))
    os.environ.pop("COG_WEIGHTS", None)
    from predictors.sd_style.predict import Predictor

    rows.append(("weight files within 0.1% of the real sizes", _size_check(args.root)))
    first_setup, predictor = _timed(lambda: _setup(Predictor()))
    del predictor
    warm_setup, predictor = _timed(lambda: _setup(Predictor()))
    rows += [
        ("setup(), first in this process (verifies files)", f"{first_setup:.1f} s"),
        ("setup(), second", f"{warm_setup:.1f} s"),
    ]
    sp = predictor.pipeline
    shown = _show(rows, 0)
    rows += stock_rows(predictor, args.overhead_size, args.trials)
    shown = _show(rows, shown)
    style = _picture(300)
    encode_new, _ = _timed(sp.style_embedding, style)
    encode_cached, _ = _timed(sp.style_embedding, style)
    rows.append(
        ("style embedding: new / repeated (cache)", f"{encode_new:.2f} s / {encode_cached * 1e3:.2f} ms")
    )
    rows.append(lora_switch_row(sp, args.root))
    shown = _show(rows, shown)
    rows += seed_job_rows(sp, args.root, args.size, args.trials)
    width = max(len(name) for name, _ in rows)
    print(
        f"\nsd_style bench: CPU process time, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"SD1.5 at {args.width:g} of its widths"
    )
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    return 0


def _show(rows: list[tuple[str, str]], shown: int) -> int:
    """Print the rows measured since the last call at once (a run takes minutes on a CPU)."""
    for name, value in rows[shown:]:
        print(f"  {name}: {value}", flush=True)
    return len(rows)


def _size_check(root: Path) -> str:
    """How many weight files have the size of the real file (the shapes are real; headers differ)."""
    real = manifests.load(REPO_ROOT / "weights_manifest.json").files
    checked = [
        (root / entry["dest"]).stat().st_size / entry["size"]
        for entry in real.values()
        if "sd_style/sd15" in entry["needed_by"]
        and (entry["size"] or 0) > 10_000_000
        and (root / entry["dest"]).is_file()
    ]
    close = sum(abs(ratio - 1) < 1e-3 for ratio in checked)
    return f"{close} of {len(checked)}"


def _setup(predictor):
    predictor.setup()
    return predictor


if __name__ == "__main__":
    sys.exit(main())
