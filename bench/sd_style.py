"""Benchmark of the sd_style predictor on full-size SD1.5-shaped random weights (never run in CI).

    .venv/bin/python -m bench.sd_style [--root .cache/bench-sd15-full] [--threads 2]

Writes, once, a weights root in the real layout with random weights of the real SD1.5 shapes (UNet, VAE, text
encoder, canny and tile ControlNets, IP-Adapter, ViT-H image encoder, safety checker; about 7 GB), from the
reference configs in ``../shared/reference/sd``. Then it measures, in one run:
- setup() from that local root (first start, which hashes the files, and a warm start);
- our predictor against diffusers' stock pipeline called directly, same weights, steps and size;
- our default job (one pass, 20 steps) against the baseline's (two ControlNet passes of 30 steps, CFG 8,
  the IP-Adapter reloaded and the style re-encoded on every call), built from the timing of one step and of
  the fixed costs at 512x512;
- the style-embedding cache on a repeated style.
"""

from __future__ import annotations

import argparse
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
from tools.tiny_weights import environment, write_manifest
from tools.tiny_weights import sd15 as layout

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("TRIPTYCH_SHARED", REPO_ROOT.parent / "shared")) / "reference" / "sd"
BASELINE_STEPS, BASELINE_PASSES, OUR_STEPS = 30, 2, 20


def _config(relative: str) -> dict:
    config = json.loads((REFERENCE / relative).read_text())
    # Building random models: a stored torch_dtype would mix half and float parameters.
    return {
        k: v for k, v in config.items() if not k.startswith("_") and k not in ("torch_dtype", "architectures")
    }


def write_full_root(root: Path) -> None:
    """The SD1.5 style-transfer weights root with random weights of the real shapes."""
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
    text_encoder = CLIPTextModel(CLIPTextConfig(**_config("sd15_runwayml/text_encoder/config.json")))
    layout.save_fp16_variant(text_encoder, base / "text_encoder")
    del text_encoder
    unet = UNet2DConditionModel(**_config("sd15_runwayml/unet/config.json"))
    vision = _config("h94_IP-Adapter__models__image_encoder__config.json")
    adapter = layout.ip_adapter_tensors(unet, vision["projection_dim"], 0, 1)
    layout.write_ip_adapter(
        root / layout.IP_ADAPTER_ROOT / "models", "ip-adapter_sd15", adapter, with_bin=False
    )
    layout.save_fp16_variant(unet, base / "unet")
    del unet
    layout.save_fp16_variant(AutoencoderKL(**_config("sd15_runwayml/vae/config.json")), base / "vae")
    controlnet_config = _config("controlnet/control_v11p_sd15_canny.config.reconstructed.json")
    for dest in (layout.CANNY, layout.TILE):
        layout.save_fp16_variant(ControlNetModel(**controlnet_config), root / dest)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**vision))
    encoder.save_pretrained(root / layout.IMAGE_ENCODER, safe_serialization=True)  # fp32, as h94 stores it
    del encoder
    checker_config = _config("sd15_runwayml/safety_checker/config.json")
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


def _predict_inputs(predictor, folder: Path, seed: int, **inputs) -> dict:
    import inspect

    content, style = folder / "content.png", folder / f"style-{seed}.png"
    _picture(1).save(content)
    _picture(seed).save(style)
    defaults = {n: p.default.default for n, p in inspect.signature(predictor.predict).parameters.items()}
    return {**defaults, "image": content, "style_image": style, "seed": 1, **inputs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=REPO_ROOT / ".cache" / "bench-sd15-full")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=512, help="side of the square job for the step timings")
    parser.add_argument("--overhead-size", type=int, default=128)
    parser.add_argument("--trials", type=int, default=3, help="alternating runs of ours and stock")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not REFERENCE.is_dir():
        print(f"reference configs not found at {REFERENCE}; set TRIPTYCH_SHARED", file=sys.stderr)
        return 1
    rows: list[tuple[str, str]] = []

    if not (args.root / "weights_manifest.json").is_file():
        seconds, _ = _timed(write_full_root, args.root)
        rows.append(("write full-size random root (once)", f"{seconds:.1f} s"))
    os.environ.update(environment(args.root))
    os.environ.pop("COG_WEIGHTS", None)
    from diffusers import DPMSolverMultistepScheduler

    from predictors.sd_style.pipeline import Job, canny_edges
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

    # Our predictor against diffusers' stock pipeline: same modules, steps, size; a new style each call.
    folder = Path(tempfile.mkdtemp(prefix="bench-sd-style-"))
    size = args.overhead_size
    stock = type(sp.txt2img)(**sp.txt2img.components)
    stock.set_progress_bar_config(disable=True)
    stock.scheduler = DPMSolverMultistepScheduler.from_config(
        sp.txt2img.scheduler.config, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True
    )
    ours_times, core_times, stock_times = [], [], []
    core_run = sp.run

    def timed_core_run(*run_args, **run_kwargs):
        seconds, images = _timed(core_run, *run_args, **run_kwargs)
        core_times.append(seconds)
        return images

    # One untimed call first: the first run at a new size pays for kernel set-up.
    predictor.predict(
        **_predict_inputs(
            predictor, folder, 99, num_inference_steps=1, max_side=size, disable_safety_checker=True
        )
    )
    sp.run = timed_core_run  # predict() calls the core through this attribute
    for trial in range(args.trials):
        inputs = _predict_inputs(
            predictor,
            folder,
            100 + trial,
            num_inference_steps=2,
            max_side=size,
            output_format="png",
            disable_safety_checker=True,
        )
        style, content = _picture(200 + trial), _picture(1).resize((size, size))

        def run_stock(style=style, content=content):
            stock.set_ip_adapter_scale({"up": {"block_1": [1.0, 1.0, 1.0]}})
            stock(
                prompt="",
                negative_prompt=None,
                image=canny_edges(content, 100, 200),
                height=size,
                width=size,
                num_inference_steps=2,
                guidance_scale=6.0,
                controlnet_conditioning_scale=0.75,
                ip_adapter_image=style,
                generator=torch.Generator().manual_seed(1),
            ).images[0].save(folder / "stock.png")

        # Alternate which goes first, so a drift in the machine's load does not favour one side.
        order = (
            (("ours", predictor.predict), ("stock", run_stock))
            if trial % 2 == 0
            else (
                ("stock", run_stock),
                ("ours", predictor.predict),
            )
        )
        for name, call in order:
            seconds, _ = _timed(call, **inputs) if name == "ours" else _timed(call)
            (ours_times if name == "ours" else stock_times).append(seconds)
    sp.run = core_run
    ours_median, stock_median = statistics.median(ours_times), statistics.median(stock_times)
    outside = statistics.median(a - b for a, b in zip(ours_times, core_times, strict=True))
    rows += [
        (
            f"predict() vs stock pipeline, {size}^2, 2 steps, median of {args.trials}",
            f"{ours_median:.2f} s vs {stock_median:.2f} s = {ours_median / stock_median:.3f}x",
        ),
        ("  predict() time outside the core (decode, resize, save)", f"{outside:.3f} s"),
    ]

    shown = _show(rows, shown)

    # Step timings at the job size: one run of two steps, the second step timed by the step callback.
    content = _picture(1).resize((args.size, args.size))
    style = _picture(300)
    encode_new, _ = _timed(sp.style_embedding, style)
    encode_cached, _ = _timed(sp.style_embedding, style)
    rows.append(
        ("style embedding: new / repeated (cache)", f"{encode_new:.2f} s / {encode_cached * 1e3:.2f} ms")
    )
    stamps: list[float] = []
    job = Job(content=content, style_images=[style], guidance_scale=6.0, seed=1, num_inference_steps=2)
    two_steps, _ = _timed(sp.run, job, on_step=lambda *_: stamps.append(time.perf_counter()))
    step = stamps[1] - stamps[0]
    fixed = two_steps - 2 * step
    with torch.inference_mode():
        pixels = sp.txt2img.image_processor.preprocess(content).to(sp.device, sp.txt2img.vae.dtype)
        vae_encode, _ = _timed(sp.txt2img.vae.encode, pixels)
    reload_adapter, _ = _timed(
        sp.txt2img.load_ip_adapter,
        str(args.root / layout.IP_ADAPTER_ROOT),
        subfolder="models",
        weight_name="ip-adapter_sd15.safetensors",
        local_files_only=True,
    )
    ours = fixed + OUR_STEPS * step
    baseline = reload_adapter + BASELINE_PASSES * (fixed + vae_encode + encode_new + BASELINE_STEPS * step)
    rows += [
        (f"one step (UNet + ControlNet, CFG batch of 2), {args.size}^2", f"{step:.1f} s"),
        ("fixed cost per pass (prompt, Canny, VAE decode, ...)", f"{fixed:.1f} s"),
        ("VAE encode (the baseline's img2img passes)", f"{vae_encode:.1f} s"),
        ("IP-Adapter reload (the baseline, every call)", f"{reload_adapter:.2f} s"),
        (f"our default job (1 pass x {OUR_STEPS} steps, cached style)", f"{ours:.0f} s"),
        (f"baseline job ({BASELINE_PASSES} passes x {BASELINE_STEPS} steps, CFG 8)", f"{baseline:.0f} s"),
        ("speed-up, baseline / ours", f"{baseline / ours:.2f}x"),
        ("speed-up with a new style (ours encodes it once)", f"{baseline / (ours + encode_new):.2f}x"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"\nsd_style bench: CPU, {torch.get_num_threads()} threads, torch {torch.__version__}")
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
