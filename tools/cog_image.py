"""The image ``cog build -f <config>`` makes, reproduced on a CPU-only machine without Docker.

What Cog puts in the image, and how it is reproduced here (Cog sources: replicate/cog):

- ``/src``: the build context, i.e. the project files ``.dockerignore`` leaves (``tools.dockerignore``),
  copied by ``COPY . /src``, with the chosen config copied to ``/src/cog.yaml``
  (pkg/dockerfile/standard_generator.go, ``GenerateDockerfileWithoutSeparateWeights`` and ``cpCogYaml``).
  ``build_context`` copies the same files.
- Python packages: ``python_requirements`` installed with pip, less any ``cog``/``coglet`` line, then the Cog
  SDK ``cog==<build.sdk_version>`` on its own (standard_generator.go, ``pipInstalls``,
  ``filterManagedPackages`` and ``installCog``). ``image_venv`` installs the same into a fresh venv, in the
  same two steps, except that ``torch==X`` becomes ``torch==X+cpu``, the same release built without CUDA: the
  package Cog itself picks for a CPU build (pkg/config/compatibility.go, ``torchCPUPackage``). pip's own
  configuration says where that wheel comes from (a local wheel folder, or
  ``PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu``). Every other pin is installed as it is;
  onnxruntime-gpu runs its CPU provider where no CUDA is present.
- The server: ``python -m cog.server.http`` from ``/src`` with ``COG_PREDICT_TYPE_STUB`` set to ``predict``
  and the config's ``environment`` (standard_generator.go, ``cogEnvVars``). ``server`` starts
  ``tools.cog_server.CogServer`` that way, in the venv and from the context folder.

Venvs are cached under ``.cache/image-venvs/<key>``, the key hashing everything that is installed; building
one for a requirement file removes the older ones built for the same file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from filelock import FileLock

from tools import dockerignore
from tools.cog_server import CogServer

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = Path(os.environ.get("TRIPTYCH_CACHE", REPO_ROOT / ".cache")) / "image-venvs"
PIN = re.compile(r"^([A-Za-z0-9_.\-]+(?:\[[^\]]*\])?)==([^\s;#]+)$")
# Packages Cog installs itself and strips from the requirement file (``filterManagedPackages``).
COG_MANAGED = frozenset({"cog", "coglet"})
# Bytecode is compiled on first import instead: it halves the install time and changes nothing else.
PIP_INSTALL = ("-m", "pip", "install", "--disable-pip-version-check", "--no-compile", "--quiet")
DONE = "image-venv.json"


def configs() -> list[str]:
    """The Cog configs of the project (``cog.yaml`` and ``cog.<name>.yaml``)."""
    return sorted(path.name for path in REPO_ROOT.glob("cog*.yaml"))


def load(config: str) -> dict:
    return yaml.safe_load((REPO_ROOT / config).read_text())


def requirement_file(config: str) -> Path:
    return REPO_ROOT / load(config)["build"]["python_requirements"]


def image_files() -> list[Path]:
    """The requirement files the images install, each once."""
    return sorted({requirement_file(config) for config in configs()})


def requirement_lines(path: Path) -> list[str]:
    """The requirement lines of a file, without comments and blank lines."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def pins(path: Path) -> dict[str, str]:
    """``{name: version}`` of a requirements file; every line must be an exact pin (Cog follows no ``-r``)."""
    result = {}
    for line in requirement_lines(path):
        match = PIN.match(line)
        if not match:
            raise ValueError(f"{path.name}: {line!r} is not an exact pin")
        result[match.group(1).lower()] = match.group(2)
    return result


def cpu_requirements(config: str) -> list[str]:
    """The requirement lines the image installs, with torch's CPU build of the same release."""
    lines = []
    for name, version in pins(requirement_file(config)).items():
        if name in COG_MANAGED:
            continue
        lines.append(f"torch=={version.partition('+')[0]}+cpu" if name == "torch" else f"{name}=={version}")
    return lines


def sdk_requirement(config: str) -> str:
    return f"cog=={load(config)['build']['sdk_version']}"


def _key(config: str) -> str:
    python = load(config)["build"]["python_version"]
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    if python != running:
        raise RuntimeError(f"{config} asks for Python {python}; this interpreter is {running}")
    recipe = {
        "python": python,
        "requirements": cpu_requirements(config),
        "sdk": sdk_requirement(config),
        "pip": PIP_INSTALL,
    }
    return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:16]


def _pip(venv: Path, *args: str, log: Path) -> None:
    with log.open("a") as out:
        result = subprocess.run([str(venv / "bin" / "python"), *PIP_INSTALL, *args], stdout=out, stderr=out)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"pip install {' '.join(args)} failed in {venv}:\n{tail}")


def image_venv(config: str) -> Path:
    """A venv holding what the image of ``config`` installs (built once per requirement set, then reused)."""
    key = _key(config)
    venv = CACHE_DIR / key
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{venv}.lock"):
        if (venv / DONE).is_file():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        requirements = venv / "image-requirements.txt"
        requirements.write_text("\n".join(cpu_requirements(config)) + "\n")
        log = venv / "pip.log"
        _pip(venv, "-r", str(requirements), log=log)
        _pip(venv, sdk_requirement(config), log=log)
        source = requirement_file(config).relative_to(REPO_ROOT).as_posix()
        _remove_older(source, keep=key)
        (venv / DONE).write_text(json.dumps({"requirements": source, "key": key}) + "\n")
    return venv


def _remove_older(source: str, keep: str) -> None:
    """Remove the venvs built earlier for the same requirement file (each is about 2 GB)."""
    for done in CACHE_DIR.glob(f"*/{DONE}"):
        folder = done.parent
        if folder.name != keep and json.loads(done.read_text()).get("requirements") == source:
            shutil.rmtree(folder, ignore_errors=True)


def build_context(config: str, dest: Path, patterns: list[str] | None = None) -> Path:
    """Copy into ``dest`` what ``/src`` of the image holds; ``patterns`` replace ``.dockerignore``'s."""
    if patterns is None:
        patterns = dockerignore.patterns_of(REPO_ROOT)
    dest.mkdir(parents=True)
    for relative in dockerignore.context_paths(REPO_ROOT, patterns):
        source, target = REPO_ROOT / relative, dest / relative
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        elif source.is_dir():
            target.mkdir()
        else:
            shutil.copy2(source, target)
    if not (dest / config).is_file():
        raise FileNotFoundError(f"{config} is not in the build context; cog build copies it to /src/cog.yaml")
    if config != "cog.yaml":
        shutil.copyfile(dest / config, dest / "cog.yaml")
    return dest


def image_environment(config: str) -> dict[str, str]:
    """The ``environment`` of a config as variables."""
    return dict(item.split("=", 1) for item in load(config).get("environment", []))


def server(config: str, context: Path, venv: Path, env: dict[str, str] | None = None, **options) -> CogServer:
    """A ``CogServer`` (not started) for ``config``, run from ``context`` by the venv's interpreter."""
    return CogServer(
        load(config)["predict"],
        env={**image_environment(config), **(env or {})},
        python=venv / "bin" / "python",
        source_dir=context,
        **options,
    )
