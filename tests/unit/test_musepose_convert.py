"""The musepose_compact conversion: the four release .pth files -> compact safetensors, and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from predictors.common.errors import WeightsError
from predictors.musepose.convert import CHECKPOINTS, convert_file, convert_release

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def release(tiny_weights) -> Path:
    return tiny_weights(["musepose"]) / "musepose" / "MusePose"


@pytest.fixture(scope="module")
def converted(release, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("compact")
    outputs = {spec.output: out / f"{spec.source}.safetensors" for spec in CHECKPOINTS}
    convert_release({spec.source: release / spec.filename for spec in CHECKPOINTS}, outputs)
    return outputs


def _contents(path: Path) -> dict[str, torch.dtype]:
    with safe_open(str(path), "pt") as handle:
        return {key: handle.get_tensor(key).dtype for key in handle.keys()}  # noqa: SIM118


def test_counts_dtype_and_pe_tables_dropped(converted, release):
    counts = {spec.output: len(_contents(converted[spec.output])) for spec in CHECKPOINTS}
    assert counts == {
        "musepose_denoising_unet_compact": 686,
        "musepose_reference_unet_compact": 682,
        "musepose_pose_guider_compact": 16,
        "musepose_motion_module_compact": 588 - 42,
    }
    motion = _contents(converted["musepose_motion_module_compact"])
    assert not [key for key in motion if key.endswith(".pe")]
    source = torch.load(release / "motion_module.pth", weights_only=True)
    assert len([key for key in source if key.endswith(".pe")]) == 42
    assert {dtype for path in converted.values() for dtype in _contents(path).values()} == {torch.float16}
    with safe_open(str(converted["musepose_motion_module_compact"]), "pt") as handle:
        key = next(iter(handle.keys()))
        torch.testing.assert_close(handle.get_tensor(key), source[key], atol=0, rtol=0)


def test_shared_buffer_bytes_are_gone(converted, release):
    for spec in CHECKPOINTS:
        assert converted[spec.output].stat().st_size < (release / spec.filename).stat().st_size / 2


def test_a_wrong_file_is_refused_with_a_clear_message(release, tmp_path):
    spec = next(spec for spec in CHECKPOINTS if spec.filename == "denoising_unet.pth")
    with pytest.raises(
        WeightsError, match=r"not MusePose's denoising_unet\.pth: it holds 682 tensors instead"
    ):
        convert_file(release / "reference_unet.pth", tmp_path / "out.safetensors", spec)
    assert not (tmp_path / "out.safetensors").exists()


def test_corrupt_and_non_float_files_are_refused(tmp_path):
    spec = next(spec for spec in CHECKPOINTS if spec.filename == "pose_guider.pth")
    garbage = tmp_path / "pose_guider.pth"
    garbage.write_bytes(b"<html>not found</html>")
    with pytest.raises(WeightsError, match="could not be read as a PyTorch checkpoint"):
        convert_file(garbage, tmp_path / "out.safetensors", spec)
    integers = {f"blocks.{i}.weight": torch.zeros(2, dtype=torch.int64) for i in range(15)}
    integers["conv_out.weight"] = torch.zeros(2, dtype=torch.int64)
    torch.save(integers, garbage)
    with pytest.raises(WeightsError, match="instead of one float type"):
        convert_file(garbage, tmp_path / "out.safetensors", spec)


def test_the_manifest_registers_the_conversion():
    manifest = json.loads((REPO / "weights_manifest.json").read_text())
    step = manifest["conversions"]["musepose_compact"]
    assert step["function"] == "predictors.musepose.convert:convert_release"
    assert sorted(step["inputs"]) == sorted(spec.source for spec in CHECKPOINTS)
    assert sorted(step["outputs"]) == sorted(spec.output for spec in CHECKPOINTS)
    sizes = {name: manifest["files"][name]["size"] for name in step["inputs"]}
    assert sizes["musepose_motion_module"] == 916202377
