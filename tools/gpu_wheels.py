"""Record which CUDA each pinned GPU wheel of the images is built for, in ``tests/data/gpu_wheels.json``.

    python -m tools.gpu_wheels        # needs PyPI and binutils' readelf; rewrites the file

The images install ``torch`` and ``onnxruntime-gpu`` from PyPI; both carry their own CUDA build, and the two
must agree with each other and with ``build.cuda`` (the CUDA base image). The wheels are far too large to
look at in a test, so this tool reads the facts once per pin and the tests read the file it writes:

- torch: the CUDA its metadata requires (``Requires-Dist: cuda-toolkit[...]==13.0.3``, ``nvidia-*-cu13``),
  read with ``pip install --dry-run --report`` (metadata only, nothing is downloaded but the metadata).
- onnxruntime-gpu: the sonames its CUDA execution provider is linked against (the ``DT_NEEDED`` entries of
  ``onnxruntime/capi/libonnxruntime_providers_cuda.so``: ``libcudart.so.13``, ``libcublasLt.so.13``...),
  read with ``readelf -d`` from the wheel fetched with ``pip download``.

Wheels are those for CPython 3.11 on manylinux_2_28_x86_64 (``python_version: "3.11"``, linux/amd64), from
pypi.org itself: pip's configuration is set aside so that a local CPU-only mirror cannot answer instead.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from predictors.common.download import sha256_of
from tools import cog_image

REPO_ROOT = Path(__file__).resolve().parents[1]
FACTS_FILE = REPO_ROOT / "tests" / "data" / "gpu_wheels.json"
INDEX_URL = "https://pypi.org/simple"
PLATFORM = "manylinux_2_28_x86_64"
PYTHON_VERSION = "3.11"
ORT_CUDA_PROVIDER = "onnxruntime/capi/libonnxruntime_providers_cuda.so"
# Sonames whose major number is the CUDA major (cuBLAS follows the toolkit's major since CUDA 11).
CUDA_SONAME = re.compile(r"^lib(?:cudart|cublas|cublasLt)\.so\.(\d+)$")
# ``nvidia-cudnn-cu13``, ``nvidia-nccl-cu12``...: the CUDA major a component was built for.
CU_SUFFIX = re.compile(r"^nvidia-[a-z0-9-]+-cu(\d+)\b")
# ``cuda-toolkit[...]==13.0.3`` (torch >= 2.10) or ``nvidia-cuda-runtime-cu12==12.8.90`` (older torch).
TOOLKIT = re.compile(r"^(?:cuda-toolkit|nvidia-cuda-runtime(?:-cu\d+)?)(?:\[[^\]]*\])?==(\d+)\.(\d+)")


def _pip(*args: str, cwd: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    common = ["--no-deps", "--only-binary=:all:", "--platform", PLATFORM, "--python-version", PYTHON_VERSION]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            *args,
            "--disable-pip-version-check",
            *common,
            "--index-url",
            INDEX_URL,
        ],
        check=True,
        cwd=cwd,
        env=env,
    )


def torch_facts(version: str, workdir: Path) -> dict:
    """The CUDA the PyPI torch wheel requires, from its metadata."""
    report = workdir / "torch-report.json"
    target = workdir / "target"
    _pip("install", "--dry-run", "--quiet", "--ignore-installed", "--report", str(report), "--target",
         str(target), f"torch=={version}", cwd=workdir)  # fmt: skip
    (item,) = json.loads(report.read_text())["install"]
    requires = [line for line in item["metadata"].get("requires_dist", []) if "extra ==" not in line]
    evidence = [line for line in requires if CU_SUFFIX.match(line) or TOOLKIT.match(line)]
    majors = {int(m.group(1)) for line in evidence if (m := CU_SUFFIX.match(line))}
    toolkits = {(int(m.group(1)), int(m.group(2))) for line in evidence if (m := TOOLKIT.match(line))}
    if len(toolkits) != 1 or {major for major, _ in toolkits} | majors != {next(iter(toolkits))[0]}:
        raise SystemExit(f"torch=={version}: no single CUDA in its requirements: {evidence}")
    ((major, minor),) = toolkits
    return {
        "file": item["download_info"]["url"].rsplit("/", 1)[-1],
        "sha256": item["download_info"]["archive_info"]["hashes"]["sha256"],
        "cuda": f"{major}.{minor}",
        "cuda_major": major,
        "evidence": {"Requires-Dist": evidence},
    }


def needed(library: Path) -> list[str]:
    """The ``DT_NEEDED`` sonames of a shared library, in order."""
    text = subprocess.run(["readelf", "-d", str(library)], check=True, capture_output=True, text=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", text)


def onnxruntime_gpu_facts(version: str, workdir: Path) -> dict:
    """The CUDA major the onnxruntime-gpu wheel's CUDA provider links against."""
    _pip("download", "--quiet", "--dest", str(workdir), f"onnxruntime-gpu=={version}", cwd=workdir)
    (wheel,) = workdir.glob(f"onnxruntime_gpu-{version}-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        library = Path(archive.extract(ORT_CUDA_PROVIDER, workdir))
    sonames = needed(library)
    majors = {int(m.group(1)) for name in sonames if (m := CUDA_SONAME.match(name))}
    if len(majors) != 1:
        raise SystemExit(f"onnxruntime-gpu=={version}: no single CUDA major in {sonames}")
    return {
        "file": wheel.name,
        "sha256": sha256_of(wheel),
        "cuda_major": majors.pop(),
        "evidence": {f"{ORT_CUDA_PROVIDER} DT_NEEDED": sonames},
    }


INSPECTORS = {"torch": torch_facts, "onnxruntime-gpu": onnxruntime_gpu_facts}


def pinned() -> dict[str, str]:
    """``{name: version}`` of the GPU wheels the image requirement files pin (one version each)."""
    found: dict[str, set[str]] = {}
    for path in cog_image.image_files():
        for name, version in cog_image.pins(path).items():
            if name in INSPECTORS:
                found.setdefault(name, set()).add(version)
    split = {name: versions for name, versions in found.items() if len(versions) != 1}
    if split:
        raise SystemExit(f"the image files pin more than one version of {split}")
    return {name: versions.pop() for name, versions in sorted(found.items())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.gpu_wheels", description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=FACTS_FILE)
    args = parser.parse_args(argv)
    wheels = {}
    for name, version in pinned().items():
        with tempfile.TemporaryDirectory(prefix=f"gpu-wheel-{name}-") as folder:
            wheels[f"{name}=={version}"] = INSPECTORS[name](version, Path(folder))
        print(f"{name}=={version}: CUDA {wheels[f'{name}=={version}']['cuda_major']}", flush=True)
    facts = {
        "about": "CUDA builds of the GPU wheels the image requirement files pin (python -m tools.gpu_wheels)",
        "index": INDEX_URL,
        "python": PYTHON_VERSION,
        "platform": PLATFORM,
        "wheels": wheels,
    }
    args.output.write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
