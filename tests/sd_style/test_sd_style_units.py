"""Pure helpers of the sd_style predictor: sizes, Canny, block maps, hashing, the tiny tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from predictors.common.errors import InputError
from predictors.sd_style.ip_adapter_layers import STYLE_MODES, adapter_scale
from predictors.sd_style.pipeline import SCHEDULERS, Job, canny_edges, image_digest, make_scheduler
from predictors.sd_style.predict import Predictor, render_size
from tools.cog_runtime import input_defaults


def test_render_size_keeps_aspect_and_rounds_to_8():
    # Default long side, scaling up a small image as well as down a large one.
    assert render_size(400, 300, max_side=None, megapixels=None, default_side=768) == (768, 576)
    assert render_size(3000, 2000, max_side=None, megapixels=None, default_side=1024) == (1024, 680)
    # 500x350 exactly; 504 would break the limit, so both sides round down.
    assert render_size(1000, 700, max_side=500, megapixels=None, default_side=768) == (496, 344)
    w, h = render_size(1600, 900, max_side=None, megapixels=1.0, default_side=768)
    assert w * h <= 1_000_000 and w * h > 900_000 and w % 8 == 0 and h % 8 == 0
    assert abs(w / h - 16 / 9) < 0.02
    # Both limits: the smaller wins.
    assert max(render_size(1600, 900, max_side=512, megapixels=1.0, default_side=768)) <= 512
    with pytest.raises(InputError, match="short side"):
        render_size(5000, 100, max_side=1024, megapixels=None, default_side=768)


def test_canny_edges_finds_a_square():
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[16:48, 16:48] = 255
    edges = np.asarray(canny_edges(Image.fromarray(pixels), 100, 200))
    assert edges.shape == (64, 64, 3) and set(np.unique(edges)) == {0, 255}
    assert edges[16:48, 15:17].any() and not edges[28:36, 28:36].any()


def _job(**changes) -> Job:
    settings = {
        name: value for name, value in input_defaults(Predictor).items() if name in Job.__annotations__
    }
    image = Image.new("RGB", (64, 64))
    return Job(
        **{**settings, "image": image, "style_images": [image], "style_weights": None, "seed": 0, **changes}
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"canny_low": 200, "canny_high": 100}, r"canny_low \(200\) must be below canny_high \(100\)"),
        ({"canny_low": 100, "canny_high": 100}, "canny_low"),
        ({"canny_low": -1}, "canny_low"),
        ({"canny_high": 256}, "canny_high"),
        ({"style_mode": "everything"}, "Unknown style_mode 'everything'"),
        ({"scheduler": "PLMS"}, "Unknown scheduler 'PLMS'"),
        ({"denoise_strength": 0.0}, "denoise_strength must be in"),
        ({"denoise_strength": 1.5}, "denoise_strength must be in"),
        ({"style_images": []}, "At least one style image"),
        ({"style_weights": [1.0, 1.0]}, "style_weights has 2 value"),
        ({"style_weights": [-1.0]}, "non-negative"),
        ({"style_weights": [0.0]}, "not all zero"),
        ({"style_weights": [float("nan")]}, "non-negative"),
        ({"num_inference_steps": 2, "denoise_strength": 0.3}, "num_inference_steps 4 or more"),
        ({"turbo": True, "denoise_strength": 0.2}, "num_inference_steps 5 or more"),
    ],
)
def test_job_check_names_the_input(changes, message):
    job = _job(**changes)
    with pytest.raises(InputError, match=message):
        job.check()


@pytest.mark.parametrize(
    "changes",
    [{}, {"canny_low": 0, "canny_high": 255}, {"style_weights": [0.0, 2.0]}, {"denoise_strength": 0.25}],
)
def test_job_check_accepts_the_edges_of_the_ranges(changes):
    if "style_weights" in changes:
        changes["style_images"] = [Image.new("RGB", (8, 8))] * 2
    _job(**changes).check()


def test_job_steps_and_guidance_per_mode():
    assert (_job().steps, _job().guidance) == (20, 6.0)
    assert (_job(turbo=True).steps, _job(turbo=True).guidance) == (4, 1.0)
    assert (_job(turbo=True, num_inference_steps=7, guidance_scale=1.5).steps) == 7
    assert _job(turbo=True, guidance_scale=1.5).guidance == 1.5


def test_adapter_scale_maps():
    assert adapter_scale("sd15", "full", 0.7) == 0.7
    assert adapter_scale("sd15", "style", 0.5) == {"up": {"block_1": 0.5}}
    assert adapter_scale("sd15", "style_and_layout", 0.5) == {
        "down": {"block_2": 0.5},
        "mid": 0.5,
        "up": {"block_1": 0.5},
    }
    assert adapter_scale("sdxl", "style", 0.5) == {"up": {"block_0": [0.0, 0.5, 0.0]}}
    assert adapter_scale("sdxl", "style_and_layout", 1.0) == {
        "down": {"block_2": [0.0, 1.0]},
        "up": {"block_0": [0.0, 1.0, 0.0]},
    }
    assert set(STYLE_MODES) == {"style", "style_and_layout", "full"}
    with pytest.raises(ValueError):
        adapter_scale("sd3", "style", 1.0)


def test_image_digest_depends_on_pixels_only():
    a = Image.fromarray(np.full((8, 8, 3), 10, np.uint8))
    b = Image.fromarray(np.full((8, 8, 3), 10, np.uint8)).convert("RGBA")
    c = Image.fromarray(np.full((8, 8, 3), 11, np.uint8))
    assert image_digest(a) == image_digest(b) != image_digest(c)


def test_schedulers_build_from_the_base_config():
    config = {
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000,
    }
    kinds = {name: type(make_scheduler(name, config)).__name__ for name in SCHEDULERS}
    assert kinds == {
        "DPM++ 2M Karras": "DPMSolverMultistepScheduler",
        "Euler a": "EulerAncestralDiscreteScheduler",
        "UniPC": "UniPCMultistepScheduler",
        "DDIM": "DDIMScheduler",
    }
    for name in SCHEDULERS:
        assert type(make_scheduler(name, config, turbo=True)).__name__ == "LCMScheduler"
    dpm = make_scheduler("DPM++ 2M Karras", config)
    assert (
        dpm.config.use_karras_sigmas
        and dpm.config.algorithm_type == "dpmsolver++"
        and dpm.config.solver_order == 2
    )


def test_tiny_tokenizer_is_a_working_clip_bpe(tmp_path):
    from transformers import CLIPTokenizer

    from tools.tiny_weights.sd15 import write_tokenizer

    vocab_size = write_tokenizer(tmp_path)
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path)
    ids = tokenizer("a photo of a Cat!", padding="max_length", max_length=77).input_ids
    tokens = tokenizer.convert_ids_to_tokens(ids[:7])
    assert tokens == ["<|startoftext|>", "a</w>", "photo</w>", "of</w>", "a</w>", "cat</w>", "!</w>"]
    assert len(ids) == 77 and ids[7] == tokenizer.eos_token_id == vocab_size - 1
