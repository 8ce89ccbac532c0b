"""Each image as ``cog build`` makes it, serving a prediction on this CPU-only machine (tools/cog_image.py).

For every cog*.yaml: a venv holding what that image installs from its requirement file (torch's CPU build of
the same release; cog from build.sdk_version), a copy of the build context that .dockerignore leaves, and the
real Cog server started from that copy by that venv with the config's ``predict`` and ``environment``. It
predicts on tiny weights with the inputs tools/smoke.py sends. A requirement that an image file lacks, or a
module that the context lacks, fails at setup; both cases are shown below.

The venvs (about 2 GB each, one per requirement file) are cached under ~/.cache/triptych/image-venvs. Building
one takes minutes, so the first run of this module is slow and later runs, from any clone, reuse them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tools import cog_image, dockerignore, smoke
from tools.cog_server import ServerError, output_bytes
from tools.tiny_weights import environment

REPO_ROOT = Path(__file__).resolve().parents[2]
# Venv builds take minutes on a busy machine; the limit covers one build plus the server's start.
pytestmark = [pytest.mark.http, pytest.mark.timeout(1800)]
# The tiny roots the HTTP tests use too, so the cached ones are shared.
TINY_PARTS = {"nst": ["vgg19"], "sd_style": ["sd15", "sdxl"], "musepose": ["dwpose", "musepose"]}


def predictor_name(config: str) -> str:
    return Path(cog_image.load(config)["predict"].partition(":")[0]).parent.name


def by_requirement_file(config: str):
    """``config`` as a parameter, grouped with the configs sharing its venv (one xdist worker builds it)."""
    group = cog_image.requirement_file(config).stem
    return pytest.param(config, id=config, marks=pytest.mark.xdist_group(f"image-{group}"))


def tiny_environment(config: str, tiny_weights) -> dict[str, str]:
    return environment(tiny_weights(TINY_PARTS[predictor_name(config)]))


@pytest.mark.parametrize("config", [by_requirement_file(config) for config in cog_image.configs()])
def test_the_image_serves_a_prediction(config, tmp_path, tiny_weights):
    venv = cog_image.image_venv(config)
    context = cog_image.build_context(config, tmp_path / "src")
    inputs = smoke.SMOKES[predictor_name(config)].inputs(tmp_path)
    with cog_image.server(config, context, venv, tiny_environment(config, tiny_weights)) as server:
        prediction = server.predict(inputs)
        if prediction["status"] != "succeeded":
            raise server.fail(f"{config}: prediction {prediction['status']}: {prediction.get('error')}")
        files = output_bytes(prediction)
    assert files and all(files), prediction["output"]


ORT_CHECK = """
import sys
import numpy as np
import onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
outputs = session.run(None, {"input": np.zeros((1, 3, 384, 288), np.float32)})
print(ort.__version__, session.get_providers(), [list(output.shape) for output in outputs])
"""


def first_config_of_each_file_with(distribution: str) -> list:
    """One config per requirement file that pins ``distribution``."""
    firsts: dict[Path, str] = {}
    for config in cog_image.configs():
        firsts.setdefault(cog_image.requirement_file(config), config)
    return [
        by_requirement_file(config) for path, config in firsts.items() if distribution in cog_image.pins(path)
    ]


@pytest.mark.parametrize("config", first_config_of_each_file_with("onnxruntime-gpu"))
def test_onnxruntime_gpu_falls_back_to_the_cpu_provider_without_cuda(config, tiny_weights):
    venv = cog_image.image_venv(config)
    model = tiny_weights(["dwpose"]) / "dwpose" / "dw-ll_ucoco_384.onnx"
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", ORT_CHECK, str(model)],
        capture_output=True,
        text=True,
        check=True,
    )
    version = cog_image.pins(cog_image.requirement_file(config))["onnxruntime-gpu"]
    assert result.stdout.split()[0] == version
    assert "['CPUExecutionProvider'] [[1, 133, 576], [1, 133, 768]]" in result.stdout


@pytest.mark.xdist_group("image-nst")
def test_a_module_missing_from_the_context_fails_at_setup(tmp_path, tiny_weights):
    venv = cog_image.image_venv("cog.yaml")
    patterns = [*dockerignore.patterns_of(REPO_ROOT), "predictors/common/inputs.py"]
    context = cog_image.build_context("cog.yaml", tmp_path / "src", patterns)
    with pytest.raises(ServerError, match=r"No module named 'predictors\.common\.inputs'"):
        cog_image.server("cog.yaml", context, venv, tiny_environment("cog.yaml", tiny_weights)).start()


def venv_without(venv: Path, distribution: str, dest: Path) -> Path:
    """A copy of ``venv`` without ``distribution``: what a requirement file lacking that one line installs,
    as long as nothing else requires it (``pip check`` says so). Hard links make the copy cost seconds."""
    shutil.copytree(venv, dest, symlinks=True, copy_function=os.link)
    python = str(dest / "bin" / "python")
    subprocess.run([python, "-m", "pip", "uninstall", "--yes", "--quiet", distribution], check=True)
    subprocess.run([python, "-m", "pip", "check"], check=True, stdout=subprocess.DEVNULL)
    return dest


@pytest.mark.xdist_group("image-musepose")
def test_a_requirement_missing_from_the_image_file_fails_at_setup(tmp_path, tiny_weights):
    config = "cog.musepose.yaml"
    assert "av" in cog_image.pins(cog_image.requirement_file(config))
    venv = cog_image.image_venv(config)
    context = cog_image.build_context(config, tmp_path / "src")
    # Beside the venv, so that hard links work whatever filesystem the temporary folder is on.
    scratch = Path(tempfile.mkdtemp(prefix="without-av-", dir=venv.parent))
    try:
        lacking = venv_without(venv, "av", scratch / "venv")
        with pytest.raises(ServerError, match="No module named 'av'"):
            cog_image.server(config, context, lacking, tiny_environment(config, tiny_weights)).start()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
