"""Tiny weights roots in exactly the real on-disk layout, for tests and smoke runs.

Each *part* is a module of this package with a function ``write(root: Path, seed: int) -> None`` that writes
its files under ``root`` with the real file names, key names and configs, only with small widths and depths;
it finds where each file goes by its name in the real manifest (``dest("vgg19")``, ``dest("sd15_base")``).
``build(["vgg19", ...])`` writes the parts into one root, then writes a ``weights_manifest.json`` there: a
copy of the real manifest's entries for exactly the files written, with their tiny sha256 and size. Pointing
``WEIGHTS_DIR`` and ``TRIPTYCH_MANIFEST`` at the root makes ``predictors.common.weights`` resolve, verify and
load the tiny files through the same code path as the real ones. A file that the real manifest does not list
fails the build: the tiny layout may not drift from the real one.

Roots are deterministic from the seed and cached under ``.cache/tiny-weights/<hash>``; the hash covers the
generator sources (every module of this package: parts share writers such as ``lora.py``), the real manifest,
the seed and the library versions that shape the files.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from pathlib import Path
from unittest import mock

from filelock import FileLock

from predictors.common import manifest as manifests
from predictors.common import weights
from predictors.common.download import sha256_of

REPO_ROOT = Path(__file__).resolve().parents[2]
REAL_MANIFEST = REPO_ROOT / "weights_manifest.json"
MANIFEST_NAME = "weights_manifest.json"
CACHE_DIR = Path(os.environ.get("TRIPTYCH_CACHE", REPO_ROOT / ".cache")) / "tiny-weights"
_VERSIONED = ("torch", "diffusers", "transformers", "onnx", "safetensors", "numpy")


def _part_module(name: str):
    return importlib.import_module(f"{__name__}.{name}")


def _cache_key(parts: list[str], seed: int) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"parts": parts, "seed": seed}).encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.read_bytes())
    digest.update(REAL_MANIFEST.read_bytes())
    for dist in _VERSIONED:
        try:
            digest.update(f"{dist}={importlib.metadata.version(dist)}".encode())
        except importlib.metadata.PackageNotFoundError:
            digest.update(f"{dist}=absent".encode())
    return digest.hexdigest()[:16]


@functools.cache
def _real_manifest() -> manifests.Manifest:
    return manifests.load(REAL_MANIFEST)


def dest(name: str) -> str:
    """Where the real manifest puts the file, conversion output or folder ``name``, under a weights root."""
    manifest = _real_manifest()
    outputs = {out: spec for step in manifest.conversions.values() for out, spec in step["outputs"].items()}
    if name in manifest.folders:
        return manifest.folders[name]
    return (manifest.files.get(name) or outputs[name])["dest"]


def write_manifest(root: Path) -> None:
    """Write the tiny root's manifest: the real entries of the files present, with tiny sha256 and size."""
    real = _real_manifest()
    by_dest = {entry["dest"]: name for name, entry in real.files.items()}
    # Conversion outputs are made from the listed files by the weights layer, as with the real weights.
    derived = {output["dest"] for step in real.conversions.values() for output in step["outputs"].values()}
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_NAME):
        dest = path.relative_to(root).as_posix()
        if dest in derived:
            continue
        if dest not in by_dest:
            raise ValueError(f"tiny weights wrote {dest}, which weights_manifest.json does not list")
        name = by_dest[dest]
        files[name] = {**real.files[name], "sha256": sha256_of(path), "size": path.stat().st_size}
    manifests.save(dataclasses.replace(real, path=root / MANIFEST_NAME, files=files))


def build(parts: list[str], seed: int = 0, cache_dir: Path | None = None) -> Path:
    """Return a tiny weights root holding ``parts``, building it once per content hash."""
    parts = sorted(set(parts))
    cache_dir = Path(cache_dir or CACHE_DIR)
    root = cache_dir / f"{'+'.join(parts)}-{_cache_key(parts, seed)}"
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock"):
        if (root / MANIFEST_NAME).is_file():
            return root
        staging = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=cache_dir))
        try:
            for name in parts:
                _part_module(name).write(staging, seed)
            write_manifest(staging)
            staging.rename(root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return root


def environment(root: Path) -> dict[str, str]:
    """The environment variables that point the weights layer at a tiny root."""
    return {"WEIGHTS_DIR": str(root), "TRIPTYCH_MANIFEST": str(root / MANIFEST_NAME)}


def ensure(root: Path, target: str | list[str], **options) -> weights.Weights:
    """``weights.ensure(target, **options)`` on the tiny root ``root``, as a predictor's setup() runs it."""
    with mock.patch.dict(os.environ, environment(root)):
        return weights.ensure(target, **options)
