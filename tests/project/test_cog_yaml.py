"""The cog yaml files: valid for Cog's config schema, pointing at the predictors, with pinned requirements."""

from __future__ import annotations

import copy
import fnmatch
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from tools.cog_image import pins
from tools.cog_server import IMAGE_ENVIRONMENT

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = REPO_ROOT / "tests" / "data" / "cog_config_schema.json"
CONFIGS = {
    "cog.yaml": "nst",
    "cog.sd-style.yaml": "sd_style",
    "cog.sd-style-xl.yaml": "sd_style",
    "cog.musepose.yaml": "musepose",
}
# Variables `cog build` refuses in `environment` because Cog or the platform sets them (replicate/cog,
# pkg/config/env.go, EnvironmentVariableDenyList).
COG_RESERVED_ENV = (
    *("PATH", "LD_LIBRARY_PATH", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONUNBUFFERED", "LIBRARY_PATH"),
    *("R8_*", "REPLICATE_*", "CUDA_*", "NVIDIA_*", "NV_*", "PGET_*", "KUBERNETES_*"),
    *("HF_ENDPOINT", "HF_HUB_ENABLE_HF_TRANSFER"),
)


def config_schema() -> dict:
    """Cog's published schema plus the two keys later Cog releases accept (see tests/data/README.md)."""
    schema = copy.deepcopy(json.loads(SCHEMA_FILE.read_text()))
    schema["properties"]["environment"] = {
        "type": "array",
        "items": {"type": "string", "pattern": "^[A-Z_][A-Z0-9_]*="},
    }
    schema["properties"]["build"]["properties"]["sdk_version"] = {"type": "string"}
    return schema


def load(name: str) -> dict:
    return yaml.safe_load((REPO_ROOT / name).read_text())


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_is_valid_for_cog(name):
    config = load(name)
    jsonschema.validate(config, config_schema())
    build = config["build"]
    assert build["gpu"] is True
    assert build["python_version"] == "3.11"
    assert build["sdk_version"] == "0.23.1"
    assert "TRIPTYCH_REJECT_LOCAL_PATHS=1" in config["environment"]
    names = [item.partition("=")[0] for item in config["environment"]]
    assert len(names) == len(set(names)), f"{name} sets a variable twice"
    reserved = [n for n in names if any(fnmatch.fnmatchcase(n, pattern) for pattern in COG_RESERVED_ENV)]
    assert not reserved, f"{name}: cog build refuses {reserved}"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_test_server_runs_with_what_every_image_sets(name):
    expected = {f"{key}={value}" for key, value in IMAGE_ENVIRONMENT.items()}
    assert expected <= set(load(name)["environment"])


def test_schema_copy_still_rejects_what_cog_rejects():
    schema = config_schema()
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"build": {"gpus": True}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"predict": ["predict.py:Predictor"]}, schema)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_predict_points_at_the_predictor(name):
    file_part, _, class_name = load(name)["predict"].partition(":")
    assert file_part == f"predictors/{CONFIGS[name]}/predict.py" and class_name == "Predictor"
    path = REPO_ROOT / file_part
    assert re.search(rf"^class {class_name}\(", path.read_text(), re.MULTILINE)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_requirements_are_exact_pins_with_torch(name):
    path = REPO_ROOT / load(name)["build"]["python_requirements"]
    image = pins(path)
    assert image["torch"] == "2.13.0"
    assert "torchvision" not in image
    # The GPU images run ONNX models on CUDA: the CPU-only wheel would shadow the GPU one.
    assert "onnxruntime" not in image
    base = pins(REPO_ROOT / "requirements" / "base.txt")
    drift = {name: (version, image.get(name)) for name, version in base.items() if image.get(name) != version}
    assert not drift, f"{path.name} differs from base.txt: {drift}"


def test_sd_family_selection():
    assert "TRIPTYCH_SD_FAMILY=sd15" in load("cog.sd-style.yaml")["environment"]
    assert "TRIPTYCH_SD_FAMILY=sdxl" in load("cog.sd-style-xl.yaml")["environment"]
