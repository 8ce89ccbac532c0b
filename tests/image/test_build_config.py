"""The GPU build the cog*.yaml files ask for: one CUDA for the base image, torch and onnxruntime-gpu; the Cog
SDK only through build.sdk_version; a pinned pget on PATH.

The CUDA each pinned wheel is built for is read from tests/data/gpu_wheels.json, which ``python -m
tools.gpu_wheels`` writes from the wheels themselves (torch's Requires-Dist, the DT_NEEDED sonames of
onnxruntime-gpu's CUDA provider).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tools import cog_image, gpu_wheels

REPO_ROOT = Path(__file__).resolve().parents[2]
FACTS = json.loads((REPO_ROOT / "tests" / "data" / "gpu_wheels.json").read_text())["wheels"]
CONFIGS = cog_image.configs()
PGET_VERSION = "0.11.0"
# Where predictors/common/download.py finds it (on PATH); the asset name is the one pget's release config
# makes, pget_<Os titled>_<arch> (replicate/pget, .goreleaser.yaml); -f makes curl fail on an HTTP error
# instead of saving the error page as the binary.
PGET_RUN = (
    f"curl -fsSL -o /usr/local/bin/pget https://github.com/replicate/pget/releases/download/v{PGET_VERSION}/"
    "pget_Linux_x86_64 && chmod +x /usr/local/bin/pget"
)


def cuda_mismatches(cuda: str, image_pins: dict[str, str], facts: dict) -> list[str]:
    """Why ``build.cuda`` and the GPU wheels of one requirement file do not fit together (empty: they do).

    torch must be built for exactly ``build.cuda`` (its major.minor), onnxruntime-gpu for its major.
    """
    # Cog wants major.minor with a major of at least 11 (replicate/cog, pkg/config/config.go,
    # validateCudaVersion) and picks the nvidia/cuda base image of that minor release; its
    # pkg/config/cuda_compatibility.json lists 13.0.0 to 13.0.3 with cuDNN 9.
    if not re.fullmatch(r"\d+\.\d+", cuda) or int(cuda.split(".")[0]) < 11:
        return [f"build.cuda {cuda!r} is not a CUDA version Cog accepts"]
    wheels = [f"{name}=={image_pins[name]}" for name in gpu_wheels.INSPECTORS if name in image_pins]
    unknown = [pin for pin in wheels if pin not in facts]
    if unknown:
        return [f"no facts for {unknown}: run python -m tools.gpu_wheels"]
    problems = []
    for pin in wheels:
        built = facts[pin].get("cuda") or str(facts[pin]["cuda_major"])
        if built != (cuda if "." in built else cuda.split(".")[0]):
            problems.append(f"{pin} is built for CUDA {built}, build.cuda is {cuda}")
    return problems


@pytest.mark.parametrize("config", CONFIGS)
def test_cuda_is_the_one_the_gpu_wheels_are_built_for(config):
    build = cog_image.load(config)["build"]
    assert build["cuda"] == "13.0"
    assert cuda_mismatches(build["cuda"], cog_image.pins(cog_image.requirement_file(config)), FACTS) == []


def test_the_development_image_has_the_cuda_of_the_images():
    """Dockerfile.dev runs the suite and the benches on a GPU: its base image must carry the CUDA the wheels
    need, as one of the tags Cog builds from (pkg/config/cuda_compatibility.json: <cuda>-cudnn-devel-<os>)."""
    base = re.search(r"^FROM nvidia/cuda:(\S+)$", (REPO_ROOT / "Dockerfile.dev").read_text(), re.M).group(1)
    version, flavour = base.split("-", 1)
    assert version.rsplit(".", 1)[0] == FACTS["torch==2.13.0"]["cuda"] == "13.0"
    assert flavour == "cudnn-devel-ubuntu22.04"


def test_the_recorded_facts():
    assert FACTS["torch==2.13.0"]["cuda"] == "13.0"
    assert (
        'nvidia-cudnn-cu13==9.20.0.48; platform_system == "Linux"'
        in (FACTS["torch==2.13.0"]["evidence"]["Requires-Dist"])
    )
    ort = FACTS["onnxruntime-gpu==1.31.1"]
    assert ort["cuda_major"] == 13
    assert {"libcudart.so.13", "libcublasLt.so.13"} <= set(*ort["evidence"].values())


def test_a_mismatch_is_reported():
    pins = {"torch": "2.13.0", "onnxruntime-gpu": "1.31.1"}
    cuda12 = {**FACTS, "onnxruntime-gpu==1.31.1": {**FACTS["onnxruntime-gpu==1.31.1"], "cuda_major": 12}}
    assert cuda_mismatches("13.0", pins, cuda12) == [
        "onnxruntime-gpu==1.31.1 is built for CUDA 12, build.cuda is 13.0"
    ]
    assert cuda_mismatches("12.8", pins, FACTS) == [
        "torch==2.13.0 is built for CUDA 13.0, build.cuda is 12.8",
        "onnxruntime-gpu==1.31.1 is built for CUDA 13, build.cuda is 12.8",
    ]
    assert cuda_mismatches("13.2", pins, FACTS) == [
        "torch==2.13.0 is built for CUDA 13.0, build.cuda is 13.2"
    ]
    assert cuda_mismatches("13", pins, FACTS) == ["build.cuda '13' is not a CUDA version Cog accepts"]
    assert cuda_mismatches("13.0", {**pins, "onnxruntime-gpu": "1.30.0"}, FACTS) == [
        "no facts for ['onnxruntime-gpu==1.30.0']: run python -m tools.gpu_wheels"
    ]


@pytest.mark.parametrize("path", cog_image.image_files(), ids=lambda path: path.name)
def test_every_gpu_wheel_pin_is_the_one_the_facts_describe(path):
    pins = cog_image.pins(path)
    for name in gpu_wheels.INSPECTORS:
        if name in pins:
            assert f"{name}=={pins[name]}" in FACTS, f"{path.name}: run python -m tools.gpu_wheels"


@pytest.mark.parametrize("path", cog_image.image_files(), ids=lambda path: path.name)
def test_images_get_cog_from_sdk_version_only(path):
    # cog build strips cog and coglet from the requirements with a warning and installs the SDK of
    # build.sdk_version itself (replicate/cog, pkg/dockerfile/standard_generator.go, filterManagedPackages).
    assert not {"cog", "coglet"} & set(cog_image.pins(path))


@pytest.mark.parametrize("config", CONFIGS)
def test_the_sdk_is_the_one_development_pins(config):
    dev = dict(
        match.groups()
        for line in (REPO_ROOT / "requirements" / "dev.txt").read_text().splitlines()
        if (match := cog_image.PIN.match(line.strip()))
    )
    assert cog_image.sdk_requirement(config) == f"cog=={dev['cog']}"


@pytest.mark.parametrize("config", CONFIGS)
def test_the_image_installs_a_pinned_pget_on_path(config):
    runs = cog_image.load(config)["build"]["run"]
    commands = [run if isinstance(run, str) else run["command"] for run in runs]
    assert commands.count(PGET_RUN) == 1
