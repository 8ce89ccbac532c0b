"""The sd_style core on tiny weights in the real layout, both families: parity with diffusers' stock
pipelines, the adapter block maps, style blending and its cache, schedulers, the detail pass, safety."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from predictors.common import runtime
from predictors.sd_style.ip_adapter_layers import adapter_scale
from predictors.sd_style.pipeline import FAMILIES, SCHEDULERS, Job, StylePipeline, canny_edges, planned_steps
from predictors.sd_style.predict import Predictor
from tests.replicate_progress import progress_lines
from tools import tiny_weights as tiny
from tools.cog_runtime import input_defaults

SIZE = 64
FAMILY_NAMES = ["sd15", "sdxl"]


def _image(seed: int, size=(SIZE, SIZE)) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    pixels[size[1] // 4 : size[1] // 2, size[0] // 4 :] = 255  # an edge for Canny to find
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def root(tiny_weights):
    return tiny_weights(["sd15", "sdxl"])


class LoadedPipelines(dict):
    """The families' pipelines, each loaded on first use (a run of the SD1.5 tests alone never loads SDXL)."""

    def __init__(self, root):
        super().__init__()
        self.root = root

    def __missing__(self, name: str) -> StylePipeline:
        files = tiny.ensure(self.root, FAMILIES[name].tag)
        loaded = StylePipeline.load(FAMILIES[name], files, device=torch.device("cpu"), dtype=torch.float32)
        self[name] = loaded
        return loaded


@pytest.fixture(scope="module")
def pipelines(root):
    return LoadedPipelines(root)


def _content() -> Image.Image:
    """Flat grey with a strong-edged square (found by any thresholds) and a faint one (only by low ones)."""
    pixels = np.full((SIZE, SIZE, 3), 100, np.uint8)
    pixels[8:28, 8:28] = 250
    pixels[36:56, 30:60] = 112
    return Image.fromarray(pixels)


# A job as the API's defaults make it (the core has no defaults of its own), here at 2 steps.
JOB_DEFAULTS = {
    name: value for name, value in input_defaults(Predictor).items() if name in Job.__annotations__
}


def _job(**changes) -> Job:
    settings = {
        **JOB_DEFAULTS,
        "image": _content(),
        "style_weights": None,
        "style_images": [_image(2, (80, 72))],
        "prompt": "a painting",
        "negative_prompt": "blurry",
        "style_strength": 0.8,
        "num_inference_steps": 2,
        "seed": 7,
    }
    return Job(**{**settings, **changes})


# The maps written out by hand, independently of blocks.py.
EXPECTED_MAPS = {
    ("sd15", "style"): {"up": {"block_1": [0.8, 0.8, 0.8]}},
    ("sd15", "style_and_layout"): {
        "down": {"block_2": [0.8, 0.8]},
        "mid": 0.8,
        "up": {"block_1": [0.8, 0.8, 0.8]},
    },
    ("sd15", "full"): 0.8,
    ("sdxl", "style"): {"up": {"block_0": [0.0, 0.8, 0.0]}},
    ("sdxl", "style_and_layout"): {"down": {"block_2": [0.0, 0.8]}, "up": {"block_0": [0.0, 0.8, 0.0]}},
    ("sdxl", "full"): 0.8,
}


def _stock(sp: StylePipeline, job: Job, scheduler=None):
    """diffusers' own pipeline class, built from the same modules and called directly (DPM++ 2M Karras unless
    another ``scheduler`` is given)."""
    from diffusers import DPMSolverMultistepScheduler

    ours = sp.img2img if job.denoise_strength < 1.0 else sp.txt2img
    stock = type(ours)(**ours.components)
    stock.set_progress_bar_config(disable=True)
    stock.scheduler = scheduler or DPMSolverMultistepScheduler.from_config(
        ours.scheduler.config, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True
    )
    return _call_stock(stock, sp.family.name, job, job.steps, job.guidance)


def _call_stock(stock, family: str, job: Job, steps: int, guidance: float):
    """``stock`` called as a diffusers user calls it for ``job``: the style image itself, the block map
    written out, the Canny map as the control."""
    stock.set_ip_adapter_scale(EXPECTED_MAPS[(family, job.style_mode)])
    control = canny_edges(job.image, job.canny_low, job.canny_high)
    images = (
        {"image": job.image, "control_image": control, "strength": job.denoise_strength}
        if job.denoise_strength < 1.0
        else {"image": control}
    )
    return stock(
        prompt=job.prompt,
        negative_prompt=job.negative_prompt,
        **images,
        height=SIZE,
        width=SIZE,
        num_inference_steps=steps,
        guidance_scale=guidance,
        controlnet_conditioning_scale=job.structure_strength,
        num_images_per_prompt=job.num_outputs,
        ip_adapter_image=job.style_images[0],
        generator=torch.Generator().manual_seed(job.seed),
        output_type="np",
    ).images


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize(
    "changes",
    [
        {"style_mode": "style"},
        {"style_mode": "style_and_layout", "num_outputs": 2},
        {"style_mode": "full"},
        {"style_mode": "style", "denoise_strength": 0.6},
        {"style_mode": "style_and_layout", "denoise_strength": 0.6},
        {"style_mode": "full", "denoise_strength": 0.6, "num_outputs": 2},
    ],
    ids=[
        "txt2img-style",
        "txt2img-style_and_layout-x2",
        "txt2img-full",
        "img2img-style",
        "img2img-style_and_layout",
        "img2img-full-x2",
    ],
)
def test_parity_with_stock_diffusers(pipelines, family, changes):
    sp = pipelines[family]
    job = _job(**changes)
    ours = sp.run(job, output_type="np")
    stock = _stock(sp, job)
    assert ours.shape == stock.shape == (job.num_outputs, SIZE, SIZE, 3)
    assert np.abs(ours - stock).max() <= 1e-5


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_modes_strength_and_structure_change_the_output(pipelines, family):
    sp = pipelines[family]
    base = sp.run(_job(), output_type="np")
    for changes in (
        {"style_mode": "full"},
        {"style_mode": "style_and_layout"},
        {"style_strength": 0.0},
        {"structure_strength": 0.0},
        {"prompt": "a cat"},
        {"guidance_scale": 1.0},
        {"canny_low": 10, "canny_high": 20},
    ):
        other = sp.run(_job(**changes), output_type="np")
        # Runs are bit-exact for equal inputs (checked below), so any change beyond float noise counts.
        assert np.abs(other - base).max() > 1e-5, changes
    assert np.array_equal(sp.run(_job(), output_type="np"), base)  # deterministic for a seed
    assert not np.array_equal(sp.run(_job(seed=8), output_type="np"), base)


def _scales(sp: StylePipeline, family: str, mode: str) -> dict[str, float]:
    sp.prepare(_job(style_mode=mode))
    return {
        name.removesuffix(".processor"): processor.scale[0]
        for name, processor in sp.txt2img.unet.attn_processors.items()
        if hasattr(processor, "to_k_ip")
    }


EXPECTED_LAYERS = {
    ("sd15", "style"): (
        "up_blocks.1.attentions.0.",
        "up_blocks.1.attentions.1.",
        "up_blocks.1.attentions.2.",
    ),
    ("sd15", "style_and_layout"): (
        "down_blocks.2.attentions.0.",
        "down_blocks.2.attentions.1.",
        "mid_block.attentions.0.",
        "up_blocks.1.attentions.0.",
        "up_blocks.1.attentions.1.",
        "up_blocks.1.attentions.2.",
    ),
    ("sdxl", "style"): ("up_blocks.0.attentions.1.",),
    ("sdxl", "style_and_layout"): ("down_blocks.2.attentions.1.", "up_blocks.0.attentions.1."),
}


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("mode", ["style", "style_and_layout", "full"])
def test_block_map_sets_exactly_the_intended_layers(pipelines, family, mode):
    scales = _scales(pipelines[family], family, mode)
    # 16 cross-attentions on SD1.5 (as the real model); SDXL keeps its layout with fewer transformer layers.
    assert len(scales) == (16 if family == "sd15" else 22)
    active = {name for name, scale in scales.items() if scale != 0.0}
    if mode == "full":
        assert active == set(scales)
    else:
        prefixes = EXPECTED_LAYERS[(family, mode)]
        assert active == {name for name in scales if name.startswith(prefixes)}
        assert {name.split(".transformer_blocks")[0] for name in active} == {p.rstrip(".") for p in prefixes}
    assert all(scales[name] == pytest.approx(0.8) for name in active)


@pytest.mark.parametrize("mode", ["style", "style_and_layout"])
def test_each_family_gets_its_own_map(pipelines, mode):
    """The trap the family-specific maps avoid: SD1.5's up_blocks.0 has no attention, so the SDXL map applied
    to SD1.5 switches the adapter off without an error; the SD1.5 map is what the pipeline applies there."""
    sp = pipelines["sd15"]
    assert adapter_scale("sdxl", mode, 0.8) != adapter_scale("sd15", mode, 0.8)
    sp.txt2img.set_ip_adapter_scale(adapter_scale("sdxl", mode, 0.8))
    unet = sp.txt2img.unet
    wrong = [p.scale[0] for p in unet.attn_processors.values() if hasattr(p, "to_k_ip")]
    assert mode == "style_and_layout" or (wrong and not any(wrong))
    active = {name for name, scale in _scales(sp, "sd15", mode).items() if scale}
    assert active == {
        name for name in _scales(sp, "sd15", mode) if name.startswith(EXPECTED_LAYERS[("sd15", mode)])
    }


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_style_blend_weights(pipelines, family):
    sp = pipelines[family]
    first, second = _image(2, (80, 72)), _image(3, (64, 96))
    only_first = sp.run(_job(style_images=[first]), output_type="np")
    only_second = sp.run(_job(style_images=[second]), output_type="np")
    assert np.allclose(
        sp.run(_job(style_images=[first, second], style_weights=[1.0, 0.0]), output_type="np"),
        only_first,
        atol=1e-6,
    )
    blend = sp.run(_job(style_images=[first, second], style_weights=[1.0, 1.0]), output_type="np")
    assert np.abs(blend - only_first).max() > 1e-4 and np.abs(blend - only_second).max() > 1e-4
    embeds = sp.adapter_embeds([first, second], [3.0, 1.0], guidance=6.0)[0]
    expected = 0.75 * sp.style_embedding(first) + 0.25 * sp.style_embedding(second)
    assert torch.allclose(embeds[1, 0], expected[0]) and not embeds[0].any()


def test_embedding_cache_skips_the_image_encoder(pipelines):
    sp = pipelines["sd15"]
    calls = []
    hook = sp.txt2img.image_encoder.register_forward_hook(lambda *args: calls.append(1))
    try:
        style = _image(40)
        sp.run(_job(style_images=[style]))
        assert len(calls) == 1
        sp.run(_job(style_images=[Image.fromarray(np.asarray(style).copy())], seed=9))
        assert len(calls) == 1  # same pixels, new object: served from the cache
        sp.run(_job(style_images=[_image(41)]))
        assert len(calls) == 2
    finally:
        hook.remove()


def test_denoise_strength_sets_the_number_of_steps_run(pipelines):
    """diffusers' img2img runs int(steps * strength) of the steps (its default strength, 0.8, would run 4 of
    6); the detail pass runs int(6 * 0.35) = 2 more. The passes are the same code for both families."""
    sp = pipelines["sd15"]
    seen = []

    def record(progress):
        seen.append((progress.stage, progress.step, progress.total))

    for denoise, main in ((1.0, 6), (0.5, 3), (0.34, 2)):
        seen.clear()
        sp.run(_job(num_inference_steps=6, denoise_strength=denoise), on_step=record)
        assert seen == [("main", step, main) for step in range(1, main + 1)], denoise
    seen.clear()
    sp.run(_job(num_inference_steps=6, detail_pass=True), on_step=record)
    assert seen == [("main", step, 6) for step in range(1, 7)] + [("detail", 1, 2), ("detail", 2, 2)]


# diffusers' classes written out, independently of make_scheduler.
STOCK_SCHEDULERS = {
    "Euler a": "EulerAncestralDiscreteScheduler",
    "UniPC": "UniPCMultistepScheduler",
    "DDIM": "DDIMScheduler",
}


@pytest.mark.parametrize("scheduler", list(STOCK_SCHEDULERS))
def test_other_schedulers_equal_stock_diffusers(root, pipelines, scheduler):
    """Each scheduler as a diffusers user builds it: the class, from the base model's own scheduler config."""
    import diffusers

    sp = pipelines["sd15"]
    job = _job(scheduler=scheduler, num_inference_steps=3)
    ours = sp.run(job, output_type="np")
    assert type(sp.txt2img.scheduler).__name__ == STOCK_SCHEDULERS[scheduler]
    scheduler_class = getattr(diffusers, STOCK_SCHEDULERS[scheduler])
    stock = _stock(sp, job, scheduler_class.from_pretrained(_base_folder(root), subfolder="scheduler"))
    assert np.abs(ours - stock).max() <= 1e-5


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_every_scheduler_runs_and_differs(pipelines, family):
    sp = pipelines[family]
    outputs = {name: sp.run(_job(scheduler=name), output_type="np") for name in SCHEDULERS}
    assert all(np.isfinite(image).all() for image in outputs.values())
    names = list(outputs)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert np.abs(outputs[a] - outputs[b]).max() > 1e-4, (a, b)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_detail_pass(pipelines, family):
    sp = pipelines[family]
    calls = []
    hook = sp.detail.controlnet.register_forward_hook(lambda *args: calls.append(1))
    try:
        plain = sp.run(_job(num_outputs=2), output_type="np")
        calls.clear()
        detailed = sp.run(_job(num_outputs=2, detail_pass=True), output_type="np")
    finally:
        hook.remove()
    assert detailed.shape == plain.shape and np.abs(detailed - plain).max() > 1e-4
    if family == "sd15":
        assert sp.detail.controlnet is not sp.txt2img.controlnet  # the tile ControlNet
        assert sp.detail.unet is sp.txt2img.unet  # shared, not loaded twice
    assert calls  # the detail ControlNet ran


@pytest.mark.parametrize(
    ("family", "changes", "passes"),
    [
        ("sd15", {"num_inference_steps": 3}, {"main": 3}),
        ("sd15", {"num_inference_steps": 7, "denoise_strength": 0.5}, {"main": 3}),
        # The detail pass runs img2img at 0.35 of max(steps, 3) steps.
        (
            "sd15",
            {"num_inference_steps": 4, "denoise_strength": 0.6, "detail_pass": True},
            {"main": 2, "detail": 1},
        ),
        (
            "sdxl",
            {"num_inference_steps": 6, "scheduler": "Euler a", "detail_pass": True},
            {"main": 6, "detail": 2},
        ),
    ],
)
def test_one_progress_bar_counts_the_steps_of_every_pass(
    pipelines, monkeypatch, capsys, caplog, family, changes, passes
):
    monkeypatch.setenv(runtime.PROGRESS_INTERVAL_ENV, "0")
    job = _job(**changes)
    assert planned_steps(job) == passes
    stages = []
    with caplog.at_level(logging.INFO, logger="predictors.sd_style.pipeline"):
        pipelines[family].run(job, on_step=lambda progress: stages.append(progress.stage))
    # diffusers ran exactly the planned steps, so the bar ends at 100%.
    assert stages == [stage for stage, count in passes.items() for _ in range(count)]
    total = sum(passes.values())
    lines = progress_lines(capsys.readouterr().out)
    assert [(current, bar_total) for _, current, bar_total in lines] == [
        (done, total) for done in range(total + 1)
    ]
    summaries = [r.getMessage() for r in caplog.records if r.name == "predictors.sd_style.pipeline"]
    width, height = job.image.size
    sampler = job.scheduler
    assert (
        summaries[0]
        == f"Rendering {job.num_outputs} image(s) at {width}x{height}: {passes} steps ({sampler})"
    )
    assert [message.split(" in ")[0] for message in summaries[1:]] == [
        f"{stage.capitalize()} pass done: {count} steps" for stage, count in passes.items()
    ]


def test_components_are_shared_between_passes(pipelines):
    for sp in (pipelines[name] for name in FAMILY_NAMES):
        for name in ("unet", "vae", "text_encoder", "image_encoder", "controlnet"):
            assert getattr(sp.img2img, name) is getattr(sp.txt2img, name)


def test_safety_checker_flags(pipelines):
    sp = pipelines["sd15"]
    images = sp.run(_job(num_outputs=2))
    assert sp.flag_unsafe(images) == [False, False]
    weights = sp.safety_checker.concept_embeds_weights
    saved = weights.detach().clone()
    try:
        with torch.no_grad():
            weights.fill_(-2.0)  # any cosine similarity now exceeds the thresholds
        assert sp.flag_unsafe(images) == [True, True]
    finally:
        with torch.no_grad():
            weights.copy_(saved)


def test_ip_adapter_bin_and_safetensors_load_alike(root, pipelines):
    from diffusers import StableDiffusionControlNetPipeline

    ours = pipelines["sd15"].txt2img
    other = StableDiffusionControlNetPipeline(**{**ours.components, "unet": _fresh_unet(root)})
    other.load_ip_adapter(
        str(root / "ip_adapter"),
        subfolder="models",
        weight_name="ip-adapter_sd15.bin",
        image_encoder_folder=None,
        local_files_only=True,
    )
    a = {k: v for k, v in ours.unet.state_dict().items() if "_ip" in k or "encoder_hid_proj" in k}
    b = {k: v for k, v in other.unet.state_dict().items() if "_ip" in k or "encoder_hid_proj" in k}
    assert a.keys() == b.keys() and len(a) > 30
    assert all(torch.equal(a[k], b[k]) for k in a)


def _fresh_unet(root):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(_base_folder(root), subfolder="unet", variant="fp16")


def _base_folder(root):
    return tiny.ensure(root, "sd_style/sd15").folder(FAMILIES["sd15"].base)


# Turbo ---------------------------------------------------------------------------------------------

# diffusers' classes written out, independently of the core.
STOCK_CLASSES = {
    "sd15": ("StableDiffusionControlNetPipeline", "StableDiffusionControlNetImg2ImgPipeline"),
    "sdxl": ("StableDiffusionXLControlNetPipeline", "StableDiffusionXLControlNetImg2ImgPipeline"),
}
LORA_FOLDERS = {"sd15": "sd15/lcm-lora-sdv1-5", "sdxl": "sdxl/lcm-lora-sdxl"}


@pytest.fixture(scope="module")
def stock_turbo(root):
    """Per family, diffusers' documented LCM-LoRA recipe, loaded afresh from the tiny root: the ControlNet
    pipeline, load_ip_adapter, load_lora_weights, fuse_lora and the LCM scheduler from the base config."""
    import diffusers

    loaded = {}

    def load(family: str):
        if family not in loaded:
            spec = FAMILIES[family]
            txt2img_cls, img2img_cls = (getattr(diffusers, name) for name in STOCK_CLASSES[family])
            extra = {"safety_checker": None, "requires_safety_checker": False} if family == "sd15" else {}
            files = tiny.ensure(root, spec.tag)
            controlnet = diffusers.ControlNetModel.from_pretrained(files.folder(spec.canny), variant="fp16")
            stock = txt2img_cls.from_pretrained(
                files.folder(spec.base), controlnet=controlnet, variant="fp16", **extra
            )
            stock.load_ip_adapter(
                str(root / "ip_adapter"),
                subfolder=spec.ip_adapter_subfolder,
                weight_name=spec.ip_adapter_weight,
                image_encoder_folder=spec.image_encoder_folder,
            )
            stock.load_lora_weights(
                str(root / LORA_FOLDERS[family]), weight_name="pytorch_lora_weights.safetensors"
            )
            stock.fuse_lora()
            stock.scheduler = diffusers.LCMScheduler.from_pretrained(
                files.folder(spec.base), subfolder="scheduler"
            )
            stock.set_progress_bar_config(disable=True)
            loaded[family] = {"txt2img": stock, "img2img": img2img_cls.from_pipe(stock)}
        return loaded[family]

    return load


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize(
    "changes",
    [{}, {"guidance_scale": 1.5, "num_inference_steps": 6, "num_outputs": 2}, {"denoise_strength": 0.6}],
    ids=["txt2img-4-steps", "txt2img-cfg-6-steps-x2", "img2img"],
)
def test_turbo_parity_with_stock_diffusers(pipelines, stock_turbo, family, changes):
    """Turbo equals diffusers' LCM-LoRA recipe on the same files: LoRA fused, LCM scheduler, steps and
    guidance, with the ControlNet and the IP-Adapter applied as in every other mode."""
    sp = pipelines[family]
    job = _job(**{"turbo": True, "num_inference_steps": None, "guidance_scale": None, **changes})
    ours = sp.run(job, output_type="np")
    stock = stock_turbo(family)["img2img" if job.denoise_strength < 1.0 else "txt2img"]
    steps, guidance = changes.get("num_inference_steps", 4), changes.get("guidance_scale", 1.0)
    expected = _call_stock(stock, family, job, steps, guidance)
    assert ours.shape == expected.shape == (job.num_outputs, SIZE, SIZE, 3)
    assert np.abs(ours - expected).max() <= 1e-5
    # The LoRA changes the result: the default mode at the same steps and guidance is another image.
    plain = sp.run(_job(num_inference_steps=4, guidance_scale=1.0, scheduler="DDIM"), output_type="np")
    assert np.abs(plain - ours[: len(plain)]).max() > 1e-3


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_turbo_runs_lcm_for_4_steps_without_guidance(pipelines, family):
    sp = pipelines[family]
    seen = []
    sp.run(_job(turbo=True, num_inference_steps=None, guidance_scale=None), on_step=seen.append)
    assert [(p.stage, p.step, p.total) for p in seen] == [("main", step, 4) for step in range(1, 5)]
    assert type(sp.turbo.txt2img.scheduler).__name__ == "LCMScheduler"
    assert sp.turbo.txt2img.guidance_scale == 1.0 and not sp.turbo.txt2img.do_classifier_free_guidance
    # Empty steps and guidance keep their default-mode meaning without turbo.
    job = _job(num_inference_steps=None, guidance_scale=None)
    assert (job.steps, job.guidance) == (20, 6.0)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_turbo_has_its_own_fused_unet_and_shares_the_rest(root, pipelines, family):
    import peft
    from safetensors.torch import load_file

    from tools.tiny_weights.lora import adapted_modules

    sp = pipelines[family]
    base, turbo = sp.txt2img.unet, sp.turbo.txt2img.unet
    assert turbo is not base
    assert not any(isinstance(m, peft.tuners.tuners_utils.BaseTunerLayer) for m in turbo.modules())
    lora = load_file(root / LORA_FOLDERS[family] / "pytorch_lora_weights.safetensors")
    modules = adapted_modules(base)
    assert len(lora) == 3 * len(modules)  # down, up and alpha for every adapted module
    turbo_weights = dict(turbo.named_parameters())
    changed = {n for n in modules if not torch.equal(turbo_weights[n + ".weight"], modules[n].weight)}
    assert changed == set(modules)  # the LoRA landed on every module it names
    # The default UNet is the file's, untouched by the fuse.
    base_folder = tiny.ensure(root, FAMILIES[family].tag).folder(FAMILIES[family].base)
    saved = load_file(base_folder / "unet/diffusion_pytorch_model.fp16.safetensors")
    assert all(torch.equal(base.state_dict()[k], v.float()) for k, v in saved.items())
    for name in ("vae", "text_encoder", "image_encoder", "controlnet", "feature_extractor"):
        assert getattr(sp.turbo.txt2img, name) is getattr(sp.txt2img, name)
    assert sp.turbo.img2img.unet is turbo and sp.turbo.detail.unet is turbo
    assert sp.turbo.detail.controlnet is sp.detail.controlnet


@pytest.mark.parametrize(
    "changes", [{"structure_strength": 0.0}, {"style_strength": 0.0}, {"detail_pass": True}], ids=str
)
def test_turbo_keeps_structure_style_and_detail_inputs(pipelines, changes):
    sp = pipelines["sd15"]
    base = sp.run(_job(turbo=True, num_inference_steps=None, guidance_scale=None), output_type="np")
    other = sp.run(
        _job(turbo=True, num_inference_steps=None, guidance_scale=None, **changes), output_type="np"
    )
    assert np.abs(other - base).max() > 1e-4


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_turbo_runs_only_the_turbo_unet_in_every_pass(pipelines, family):
    """4 main steps and int(4 * 0.35) = 1 detail step, one UNet row each (no guidance), all on the fused UNet
    and the LCM scheduler; the default UNet never runs."""
    sp = pipelines[family]
    calls = {"default": 0, "turbo": 0}
    hooks = [
        unet.register_forward_hook(lambda *args, mode=mode: calls.__setitem__(mode, calls[mode] + 1))
        for mode, unet in (("default", sp.txt2img.unet), ("turbo", sp.turbo.txt2img.unet))
    ]
    try:
        sp.run(_job(turbo=True, num_inference_steps=None, guidance_scale=None, detail_pass=True))
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == {"default": 0, "turbo": 5}
    assert type(sp.turbo.detail.scheduler).__name__ == "LCMScheduler"
