"""The musepose_compact conversion: the four release .pth files -> compact safetensors, checked against the
networks that the set's own UNet config.json builds, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from predictors.common import manifest as manifests
from predictors.common import weights
from predictors.common.errors import WeightsError
from predictors.musepose.convert import (
    CHECKPOINTS,
    CONFIG_INPUT,
    convert_file,
    convert_release,
    expected_contents,
)
from predictors.musepose.models.loading import load_models
from predictors.musepose.pipeline import MusePosePipeline
from tools.tiny_weights import musepose as tiny_musepose

REPO = Path(__file__).resolve().parents[2]
CONFIG_PATH = "sd-image-variations-diffusers/unet/config.json"


def spec_of(filename: str):
    return next(spec for spec in CHECKPOINTS if spec.filename == filename)


def convert_set(base: Path, out: Path) -> dict[str, Path]:
    """Convert the release files of a set in the upstream layout under ``base``; the compact paths by name."""
    outputs = {spec.output: out / f"{spec.source}.safetensors" for spec in CHECKPOINTS}
    inputs = {spec.source: base / "MusePose" / spec.filename for spec in CHECKPOINTS}
    convert_release({**inputs, CONFIG_INPUT: base / CONFIG_PATH}, outputs)
    return outputs


@pytest.fixture(scope="module")
def public(tiny_weights) -> Path:
    return tiny_weights(["musepose"]) / "musepose"


@pytest.fixture(scope="module")
def expected(public) -> dict:
    return expected_contents(json.loads((public / CONFIG_PATH).read_text()))


@pytest.fixture(scope="module")
def converted(public, tmp_path_factory) -> dict[str, Path]:
    return convert_set(public, tmp_path_factory.mktemp("compact"))


def _contents(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), "pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118


def test_the_public_tiny_set_converts_to_exactly_the_configs_tensors(converted, public, expected):
    for spec in CHECKPOINTS:
        contents = _contents(converted[spec.output])
        wanted = expected[spec.filename].required
        assert {key: tuple(value.shape) for key, value in contents.items()} == wanted, spec.filename
        assert {value.dtype for value in contents.values()} == {torch.float16}
    # The pe tables the release file carries are dropped (they are recomputed at build time).
    source = torch.load(public / "MusePose/motion_module.pth", weights_only=True)
    tables = [key for key in source if key.endswith(".pe")]
    assert tables and sorted(tables) == sorted(expected["motion_module.pth"].optional)
    motion = _contents(converted["musepose_motion_module_compact"])
    key = next(iter(motion))
    torch.testing.assert_close(motion[key], source[key], atol=0, rtol=0)


def test_the_release_counts_follow_from_the_release_config(reference_dir):
    """686 / 682 / 16 / 588 are a fact of the real config (sd-image-variations' UNet), not a rule."""
    config = json.loads((reference_dir / "musepose/sd-image-variations-unet-config.json").read_text())
    expected = expected_contents(config)
    counts = {name: len(wanted.required) + len(wanted.optional) for name, wanted in expected.items()}
    assert counts == {
        "denoising_unet.pth": 686,
        "reference_unet.pth": 682,
        "pose_guider.pth": 16,
        "motion_module.pth": 588,
    }


def test_shared_buffer_bytes_are_gone(converted, public):
    for spec in CHECKPOINTS:
        assert (
            converted[spec.output].stat().st_size < (public / "MusePose" / spec.filename).stat().st_size / 2
        )


def test_equal_first_widths_convert_and_run(tmp_path, expected):
    """Equal widths on the first two levels: no shortcut conv in down_blocks.1.resnets.0 (2 tensors fewer in
    each UNet); the set converts, loads strictly and generates."""
    config = {**tiny_musepose.UNET_CONFIG, "block_out_channels": [32, 32, 64, 64]}
    tiny_musepose.write(tmp_path, seed=3, unet_config=config)
    base = tmp_path / "musepose"
    outputs = convert_set(base, tmp_path / "compact")
    for name in ("denoising_unet", "reference_unet"):
        keys = _contents(outputs[f"musepose_{name}_compact"]).keys()
        public_keys = expected[f"{name}.pth"].required.keys()
        assert public_keys - keys == {
            "down_blocks.1.resnets.0.conv_shortcut.weight",
            "down_blocks.1.resnets.0.conv_shortcut.bias",
        }
        assert keys <= public_keys
    models = load_models(
        unet_config=base / CONFIG_PATH,
        denoising_unet=outputs["musepose_denoising_unet_compact"],
        motion_module=outputs["musepose_motion_module_compact"],
        reference_unet=outputs["musepose_reference_unet_compact"],
        pose_guider=outputs["musepose_pose_guider_compact"],
        vae=base / "sd-vae-ft-mse",
        image_encoder=base / "image_encoder",
    )
    pipe = MusePosePipeline(models.to(torch.device("cpu"), torch.float32), torch.device("cpu"), torch.float32)
    reference = Image.fromarray(np.full((48, 32, 3), 128, np.uint8))
    poses = np.zeros((3, 40, 24, 3), np.uint8)
    latents = pipe.denoise(
        poses,
        pipe.encode_reference(reference, 24, 40),
        steps=1,
        guidance=2.0,
        window=2,
        overlap=1,
        generator=torch.Generator().manual_seed(0),
    )
    assert latents.shape == (1, 4, 3, 5, 3) and torch.isfinite(latents).all()


def _refusal(tmp_path, expected, filename: str, state: dict) -> str:
    path = tmp_path / filename
    torch.save(state, path)
    out = tmp_path / "out.safetensors"
    with pytest.raises(WeightsError) as error:
        convert_file(path, out, spec_of(filename), expected)
    assert not out.exists()
    return str(error.value)


def test_a_missing_tensor_is_named(public, tmp_path, expected):
    state = torch.load(public / "MusePose/denoising_unet.pth", weights_only=True)
    del state["mid_block.attentions.0.proj_in.weight"]
    message = _refusal(tmp_path, expected, "denoising_unet.pth", state)
    total = len(expected["denoising_unet.pth"].required)
    assert (
        f"is not MusePose's denoising_unet.pth for its unet/config.json: it lacks 1 of the {total}" in message
    )
    assert "('mid_block.attentions.0.proj_in.weight')" in message


def test_a_wrong_shape_is_named(public, tmp_path, expected):
    state = torch.load(public / "MusePose/pose_guider.pth", weights_only=True)
    state["conv_out.weight"] = torch.zeros(8, 256, 3, 3, dtype=torch.float16)
    message = _refusal(tmp_path, expected, "pose_guider.pth", state)
    wanted = list(expected["pose_guider.pth"].required["conv_out.weight"])
    assert f"such as 'conv_out.weight' [8, 256, 3, 3] instead of {wanted}" in message


def test_another_networks_file_is_named(public, tmp_path, expected):
    state = torch.load(public / "MusePose/reference_unet.pth", weights_only=True)
    message = _refusal(tmp_path, expected, "denoising_unet.pth", state)
    assert (
        "is not MusePose's denoising_unet.pth for its unet/config.json: it holds the tensors of " in message
    )
    assert "reference_unet.pth" in message
    state = torch.load(public / "MusePose/motion_module.pth", weights_only=True)
    message = _refusal(tmp_path, expected, "pose_guider.pth", state)
    assert "it holds the tensors of motion_module.pth" in message


def test_a_file_of_another_config_is_refused(tmp_path, expected):
    """The equal-widths set's UNet file against the public config: the two missing tensors are named."""
    config = {**tiny_musepose.UNET_CONFIG, "block_out_channels": [32, 32, 64, 64]}
    state = tiny_musepose.release_state_dicts(seed=3, unet_config=config)["reference_unet"]
    message = _refusal(tmp_path, expected, "reference_unet.pth", state)
    assert "it lacks 2 of the" in message and "'down_blocks.1.resnets.0.conv_shortcut.bias'" in message
    assert "with another shape than the config builds" in message


def test_corrupt_and_non_float_files_are_refused(tmp_path, expected):
    spec = spec_of("pose_guider.pth")
    garbage = tmp_path / "pose_guider.pth"
    garbage.write_bytes(b"<html>not found</html>")
    with pytest.raises(WeightsError, match="could not be read as a PyTorch checkpoint"):
        convert_file(garbage, tmp_path / "out.safetensors", spec, expected)
    integers = {
        key: torch.zeros(shape, dtype=torch.int64)
        for key, shape in expected["pose_guider.pth"].required.items()
    }
    torch.save(integers, garbage)
    with pytest.raises(WeightsError, match="instead of one float type"):
        convert_file(garbage, tmp_path / "out.safetensors", spec, expected)


def test_an_unreadable_config_is_named(public, tmp_path):
    inputs = {spec.source: public / "MusePose" / spec.filename for spec in CHECKPOINTS}
    broken = tmp_path / "config.json"
    broken.write_text("{")
    with pytest.raises(WeightsError, match=r"could not be read as the UNet's config\.json"):
        convert_release({**inputs, CONFIG_INPUT: broken}, {})


def test_the_manifest_registers_the_conversion_and_setup_hands_it_in(monkeypatch):
    manifest = manifests.load(REPO / "weights_manifest.json")
    step = manifest.conversions["musepose_compact"]
    assert sorted(step["inputs"]) == sorted([CONFIG_INPUT, *(spec.source for spec in CHECKPOINTS)])
    assert step["kept_inputs"] == [CONFIG_INPUT]  # setup() builds the networks from it
    assert manifest.files[CONFIG_INPUT]["dest"] == f"musepose/{CONFIG_PATH}"
    assert sorted(step["outputs"]) == sorted(spec.output for spec in CHECKPOINTS)
    assert manifest.files["musepose_motion_module"]["size"] == 916202377

    from predictors.musepose.predict import ensure_weights

    calls = []
    monkeypatch.setattr(weights, "ensure", lambda *args, **options: calls.append((args, options)))
    ensure_weights()
    assert calls == [(("musepose",), {"conversions": {"musepose_compact": convert_release}})]
