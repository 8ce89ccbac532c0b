"""The sd_style Predictor on tiny weights in the real layout: every input, seeds, outputs, errors,
custom checkpoints through COG_WEIGHTS and a missing weights file."""

from __future__ import annotations

import contextlib
import functools
import http.server
import re
import shutil
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from predictors.common import media
from predictors.common.errors import InputError, WeightsError
from predictors.sd_style.pipeline import FAMILIES
from tests.call_predict import call_predict
from tests.replicate_progress import client_progress
from tools import tiny_weights as tiny

PARTS = ["sd15", "sdxl"]


def _write_image(path, seed, size):
    rng = np.random.default_rng(seed)
    pixels = np.full((size[1], size[0], 3), 90, np.uint8)
    pixels[size[1] // 4 : size[1] // 2, size[0] // 4 : size[0] // 2] = 240
    pixels += rng.integers(0, 10, pixels.shape, dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sd-style-inputs")
    corrupt = folder / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return {
        "content": _write_image(folder / "content.png", 1, (120, 90)),
        "style": _write_image(folder / "style.jpg", 2, (100, 100)),
        "style2": _write_image(folder / "style2.png", 3, (90, 140)),
        "corrupt": corrupt,
    }


def _make_predictor(env: dict[str, str]):
    from predictors.sd_style.predict import Predictor

    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        predictor = Predictor()
        predictor.setup()
    return predictor


@pytest.fixture(scope="module")
def root(tiny_weights):
    return tiny_weights(PARTS)


@pytest.fixture(scope="module")
def environment(root):
    from tools.tiny_weights import environment

    return environment(root)


@pytest.fixture(scope="module")
def sd15(environment):
    return _make_predictor({**environment, "TRIPTYCH_SD_FAMILY": "sd15"})


@pytest.fixture(scope="module")
def sdxl(environment):
    return _make_predictor({**environment, "TRIPTYCH_SD_FAMILY": "sdxl"})


def predict(predictor, files, **inputs):
    """Call predict() as Cog would (every input not given takes its declared default), at 2 steps."""
    return call_predict(
        predictor,
        **{"image": files["content"], "style_image": files["style"], "num_inference_steps": 2, **inputs},
    )


def _pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_sync_outputs_sizes_and_cleanup(sd15, files, capsys):
    first = predict(sd15, files, num_outputs=2, max_side=256, output_format="png", seed=3)
    assert len(first) == 2 and len({p.name for p in first}) == 2
    assert all(Image.open(p).format == "PNG" and Image.open(p).size == (256, 192) for p in first)
    logs = capsys.readouterr().out
    assert "Using seed 3" in logs and "Main pass done: 2 steps" in logs
    assert client_progress(logs) == (100, 2, 2)
    second = predict(sd15, files, megapixels=0.1, output_format="jpg", output_quality=80, seed=3)
    width, height = Image.open(second[0]).size
    assert (
        Image.open(second[0]).format == "JPEG" and width * height <= 100_000 and width % 8 == height % 8 == 0
    )
    assert not any(p.exists() for p in first)  # the previous prediction's files are gone
    webp = predict(sd15, files, max_side=256, output_format="webp", seed=3)
    assert Image.open(webp[0]).format == "WEBP"


def test_seed_determinism_and_random_seed(sd15, files, capsys):
    a = _pixels(predict(sd15, files, max_side=256, output_format="png", seed=11)[0])
    b = _pixels(predict(sd15, files, max_side=256, output_format="png", seed=11)[0])
    c = _pixels(predict(sd15, files, max_side=256, output_format="png", seed=12)[0])
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    capsys.readouterr()
    drawn = _pixels(predict(sd15, files, max_side=256, output_format="png", seed=None)[0])
    seed = int(capsys.readouterr().out.split("Using seed ")[1].split()[0])
    again = _pixels(predict(sd15, files, max_side=256, output_format="png", seed=seed)[0])
    assert np.array_equal(drawn, again)


@pytest.mark.parametrize(
    "inputs",
    [
        {"style_strength": 0.0},
        {"structure_strength": 0.0},
        {"style_mode": "full"},
        {"style_mode": "style_and_layout"},
        {"denoise_strength": 0.5},
        {"canny_low": 5, "canny_high": 10},
        {"guidance_scale": 2.0},
        {"scheduler": "Euler a"},
        {"scheduler": "UniPC"},
        {"scheduler": "DDIM"},
        {"prompt": "a watercolor painting"},
        {"negative_prompt": ""},
        {"detail_pass": True},
        {"num_inference_steps": 3},
        {"style_image_2": "style2", "style_weights": "1,1"},
        {"turbo": True},
    ],
    ids=lambda inputs: "-".join(inputs),
)
def test_every_input_changes_the_result(sd15, files, inputs):
    inputs = {
        key: files.get(value, value) if isinstance(value, str) else value for key, value in inputs.items()
    }
    base = _pixels(predict(sd15, files, max_side=256, output_format="png", seed=5)[0])
    other = _pixels(predict(sd15, files, max_side=256, output_format="png", seed=5, **inputs)[0])
    assert other.shape == base.shape and not np.array_equal(other, base)


class Stop(Exception):
    """Ends a prediction once the job has been seen."""


def test_inputs_reach_the_job_by_value(sd15, files, monkeypatch):
    jobs = []

    def record(job, **options):
        jobs.append(job)
        raise Stop

    monkeypatch.setattr(sd15.pipeline, "run", record)
    with pytest.raises(Stop):
        predict(
            sd15,
            files,
            style_image_2=files["style2"],
            style_weights="1,2",
            prompt="a watercolor",
            negative_prompt="dull",
            style_strength=0.6,
            structure_strength=0.4,
            style_mode="style_and_layout",
            denoise_strength=0.7,
            canny_low=30,
            canny_high=90,
            num_inference_steps=7,
            guidance_scale=4.5,
            scheduler="UniPC",
            num_outputs=3,
            seed=13,
            max_side=256,
            detail_pass=True,
            turbo=True,
        )
    (job,) = jobs
    assert job.image.size == (256, 192) and len(job.style_images) == 2
    settings = {name: value for name, value in vars(job).items() if name not in ("image", "style_images")}
    assert settings == {
        "style_weights": [1.0, 2.0],
        "prompt": "a watercolor",
        "negative_prompt": "dull",
        "style_strength": 0.6,
        "structure_strength": 0.4,
        "style_mode": "style_and_layout",
        "denoise_strength": 0.7,
        "canny_low": 30,
        "canny_high": 90,
        "num_inference_steps": 7,
        "guidance_scale": 4.5,
        "scheduler": "UniPC",
        "num_outputs": 3,
        "seed": 13,
        "detail_pass": True,
        "turbo": True,
    }


def test_turbo_defaults_to_4_lcm_steps(sd15, files, capsys):
    """Empty num_inference_steps and guidance_scale take turbo's own values, as the descriptions say."""
    capsys.readouterr()
    predict(sd15, files, max_side=256, seed=3, turbo=True, num_inference_steps=None)
    logs = capsys.readouterr().out
    assert "{'main': 4} steps (LCM, turbo)" in logs and "Main pass done: 4 steps" in logs
    assert client_progress(logs) == (100, 4, 4)


def test_extra_style_with_zero_weight_changes_nothing(sd15, files):
    single = _pixels(predict(sd15, files, max_side=256, output_format="png", seed=5)[0])
    weighted = predict(
        sd15,
        files,
        max_side=256,
        output_format="png",
        seed=5,
        style_image_2=files["style2"],
        style_image_3=files["style2"],
        style_weights="1,0,0",
    )
    assert np.abs(_pixels(weighted[0]) - single).max() <= 1


def test_output_quality_changes_lossy_files(sd15, files):
    low = predict(sd15, files, max_side=256, output_format="webp", output_quality=5, seed=5)[0].read_bytes()
    high = predict(sd15, files, max_side=256, output_format="webp", output_quality=100, seed=5)[
        0
    ].read_bytes()
    assert len(low) < len(high)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"style_image": "corrupt"}, "style image"),
        ({"image": "corrupt"}, "The image "),
        ({"style_image_2": "corrupt"}, "style image 2"),
        ({"style_image_3": "corrupt"}, "^The style image 3 "),
        ({"canny_low": 200, "canny_high": 100}, "canny_low"),
        ({"style_weights": "1,2"}, "style_weights"),
        ({"denoise_strength": 0.3, "num_inference_steps": 2}, "num_inference_steps 4 or more"),
    ],
)
def test_input_errors_are_clear(sd15, files, inputs, message):
    inputs = {
        key: files.get(value, value) if isinstance(value, str) else value for key, value in inputs.items()
    }
    with pytest.raises(InputError, match=message):
        predict(sd15, files, max_side=256, **inputs)


def test_flagged_outputs_are_withheld_unless_disabled(sd15, files):
    weights = sd15.pipeline.safety_checker.concept_embeds_weights
    saved = weights.detach().clone()
    try:
        with torch.no_grad():
            weights.fill_(-2.0)
        with pytest.raises(InputError, match="flagged as possibly NSFW"):
            predict(sd15, files, max_side=256, num_outputs=2, seed=1)
        outputs = predict(sd15, files, max_side=256, num_outputs=2, seed=1, disable_safety_checker=True)
        assert len(outputs) == 2 and all(p.exists() for p in outputs)
    finally:
        with torch.no_grad():
            weights.copy_(saved)


def test_only_flagged_outputs_are_withheld(sd15, files, capsys):
    """The checker's verdict is steered to flag the first of two images; the pipeline path stays real."""
    checker = sd15.pipeline.safety_checker
    unchecked = predict(sd15, files, max_side=256, num_outputs=2, seed=1, output_format="png")
    expected = [_pixels(path) for path in unchecked]
    assert not np.array_equal(*expected)
    real_forward = checker.forward

    def flag_first(*args, **kwargs):
        images, flags = real_forward(*args, **kwargs)
        return images, [index == 0 for index in range(len(flags))]

    capsys.readouterr()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checker, "forward", flag_first)
        kept = predict(sd15, files, max_side=256, num_outputs=2, seed=1, output_format="png")
    assert len(kept) == 1
    assert np.array_equal(_pixels(kept[0]), expected[1])
    logs = capsys.readouterr().out
    assert "Output 1 was flagged by the safety checker and is withheld." in logs
    assert "Output 2 was flagged" not in logs


def test_control_image_is_the_canny_map_of_the_content_at_the_thresholds(sd15, files):
    *images, control = predict(
        sd15,
        files,
        max_side=256,
        num_outputs=2,
        seed=4,
        canny_low=20,
        canny_high=60,
        return_control_image=True,
        disable_safety_checker=True,
    )
    assert len(images) == 2 and all(Image.open(path).format == "WEBP" for path in images)
    assert Image.open(control).format == "PNG"  # lossless whatever output_format is
    edges = np.asarray(Image.open(control))
    assert edges.shape == (192, 256, 3)
    content = media.resize(media.load_image(files["content"]), (256, 192))
    gray = cv2.cvtColor(np.asarray(content), cv2.COLOR_RGB2GRAY)
    expected = cv2.Canny(gray, 20, 60)
    # The thresholds matter for this picture, so equality below pins the ones that were asked for.
    assert not np.array_equal(expected, cv2.Canny(gray, 100, 200))
    for channel in range(3):
        np.testing.assert_array_equal(edges[..., channel], expected)
    assert len(predict(sd15, files, max_side=256, num_outputs=2, disable_safety_checker=True)) == 2


def test_sdxl_family(sdxl, files):
    assert sdxl.family.name == "sdxl"
    outputs = predict(sdxl, files, max_side=264, num_outputs=2, output_format="png", seed=2, detail_pass=True)
    assert len(outputs) == 2 and Image.open(outputs[0]).size == (264, 200)
    first = _pixels(outputs[0])
    other = predict(sdxl, files, max_side=264, output_format="png", seed=2, style_mode="full")
    assert not np.array_equal(first, _pixels(other[0]))


def _offline_copy(root, folder, **env) -> dict[str, str]:
    """An environment on a copy of ``root`` at ``folder`` in which any download fails at once."""
    copy = shutil.copytree(root, folder)
    return {
        "WEIGHTS_DIR": str(copy),
        "TRIPTYCH_MANIFEST": str(copy / "weights_manifest.json"),
        "HF_ENDPOINT": "http://127.0.0.1:9",  # nothing listens there
        "TRIPTYCH_WEIGHTS_RETRIES": "1",
        **env,
    }


def _drop_base_weights(env: dict[str, str], family: str) -> None:
    """Delete the standard base model's weight files: a custom checkpoint must load without them."""
    files = tiny.ensure(Path(env["WEIGHTS_DIR"]), FAMILIES[family].tag)
    for path in files.folder(FAMILIES[family].base).rglob("*.safetensors"):
        if "safety_checker" not in path.parts:
            path.unlink()


@contextlib.contextmanager
def _serving(folder: Path):
    """A loopback HTTP server for the files in ``folder``; yields its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("source", ["path", "url"])
def test_custom_single_file_checkpoint(sd15, root, files, tmp_path, source):
    """COG_WEIGHTS with an original-layout .safetensors of the same tiny base gives the same images, from a
    local path or from a URL (downloaded under the weights root; the query is not part of the file name)."""
    from tools.tiny_weights.sd15 import write_single_file

    checkpoint = write_single_file(root, tmp_path / "served" / "custom.safetensors")
    with _serving(checkpoint.parent) as base_url:
        value = str(checkpoint) if source == "path" else f"{base_url}/custom.safetensors?download=true"
        env = _offline_copy(root, tmp_path / "weights", COG_WEIGHTS=value)
        _drop_base_weights(env, "sd15")
        custom = _make_predictor(env)
    if source == "url":
        assert (Path(env["WEIGHTS_DIR"]) / "custom" / "custom.safetensors").is_file()
    ours = _pixels(predict(custom, files, max_side=256, output_format="png", seed=4)[0])
    stock = _pixels(predict(sd15, files, max_side=256, output_format="png", seed=4)[0])
    assert np.abs(ours - stock).max() <= 1


def _sdxl_custom_against_stock(sdxl, root, files, tmp_path, custom_weights):
    """Outputs of a predictor whose COG_WEIGHTS is ``custom_weights`` (standard base weights deleted, offline)
    and of the stock tiny SDXL predictor, same inputs and seed; also the custom predictor's environment."""
    env = _offline_copy(
        root, tmp_path / "weights", TRIPTYCH_SD_FAMILY="sdxl", COG_WEIGHTS=str(custom_weights)
    )
    _drop_base_weights(env, "sdxl")
    custom = _make_predictor(env)
    ours = _pixels(predict(custom, files, max_side=256, output_format="png", seed=4)[0])
    stock = _pixels(predict(sdxl, files, max_side=256, output_format="png", seed=4)[0])
    return env, ours, stock


def test_custom_single_file_checkpoint_for_sdxl(sdxl, root, files, tmp_path):
    """COG_WEIGHTS with an original-layout SDXL .safetensors (both text encoders, the second in OpenCLIP's
    layout) loads without the standard base weights; a perturbed copy shows the file is what is used."""
    from safetensors.torch import load_file, save_file

    from tools.tiny_weights.sdxl import write_single_file

    checkpoint = write_single_file(root, tmp_path / "sdxl-custom.safetensors")
    env, ours, stock = _sdxl_custom_against_stock(sdxl, root, files, tmp_path, checkpoint)
    assert np.abs(ours - stock).max() <= 1
    tensors = load_file(checkpoint)
    projection = "conditioner.embedders.1.model.text_projection"
    tensors[projection] = tensors[projection] * -1
    save_file(tensors, str(checkpoint))
    changed = _make_predictor(env)
    other = _pixels(predict(changed, files, max_side=256, output_format="png", seed=4)[0])
    assert np.abs(other - stock).max() > 1


def test_custom_diffusers_folder_for_sdxl(sdxl, root, files, tmp_path):
    """COG_WEIGHTS with a diffusers folder holding full-precision (non-variant) files."""
    base = tiny.ensure(root, "sd_style/sdxl").folder(FAMILIES["sdxl"].base)
    folder = shutil.copytree(base, tmp_path / "my-sdxl")
    for path in folder.rglob("*.fp16.safetensors"):
        path.rename(path.with_name(path.name.replace(".fp16", "")))
    _, ours, stock = _sdxl_custom_against_stock(sdxl, root, files, tmp_path, folder)
    assert np.abs(ours - stock).max() <= 1


def test_missing_weights_file_is_named(root, tmp_path):
    missing = "sd15/control_v11p_sd15_canny/diffusion_pytorch_model.fp16.safetensors"
    env = _offline_copy(root, tmp_path / "weights")
    (Path(env["WEIGHTS_DIR"]) / missing).unlink()
    with pytest.raises(WeightsError, match=re.escape(missing) + " is missing"):
        _make_predictor(env)


def test_unknown_family_is_refused(environment):
    with pytest.raises(WeightsError, match="TRIPTYCH_SD_FAMILY"):
        _make_predictor({**environment, "TRIPTYCH_SD_FAMILY": "sd3"})
