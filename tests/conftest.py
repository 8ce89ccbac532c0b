"""Suite-wide settings: one torch thread per process, offline hubs, and the shared reference data."""

from __future__ import annotations

import importlib
import os
from contextlib import contextmanager
from pathlib import Path

import pytest

# Set before torch is imported anywhere: on a small shared machine more threads are slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

import torch

torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put each test's ``xdist_group`` name on its node id, where ``--dist loadgroup`` reads it.

    xdist 3.8 writes ``item._nodeid``, which pytest 9.2 no longer reads: a node's id is now the structured
    ``item._id`` (pytest-xdist#1386). Without this every grouped test is scheduled alone, so each module's
    Cog server starts once per worker instead of once. This runs after xdist's own hook, on the workers
    (``loadgroup`` is their option), and changes nothing where xdist's suffix already took.
    """
    if not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        names = {
            str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
            for mark in item.iter_markers("xdist_group")
        }
        suffix = "@" + "_".join(sorted(names))
        if names and not item.nodeid.endswith(suffix):
            item._id = type(item._id).parse(item.nodeid + suffix)


SHARED = Path(os.environ.get("TRIPTYCH_SHARED", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` (reference facts and golden outputs); tests that need it skip where it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"reference data not found at {SHARED} (set TRIPTYCH_SHARED to its location)")
    return SHARED


def _shared_subfolder(shared_dir: Path, name: str, what: str) -> Path:
    path = shared_dir / name
    if not path.is_dir():
        pytest.skip(f"{what} not found at {path}")
    return path


@pytest.fixture(scope="session")
def golden_dir(shared_dir: Path) -> Path:
    return _shared_subfolder(shared_dir, "golden", "golden data")


@pytest.fixture(scope="session")
def reference_dir(shared_dir: Path) -> Path:
    return _shared_subfolder(shared_dir, "reference", "reference facts")


@pytest.fixture(scope="session")
def tiny_weights():
    """``tiny_weights(["vgg19"])`` -> a tiny weights root in the real layout (cached by content hash)."""
    from tools.tiny_weights import build

    return build


@pytest.fixture
def weights_env(monkeypatch):
    """Point the weights layer at a tiny root for the duration of one test."""
    from tools.tiny_weights import environment

    def apply(root: Path) -> Path:
        for key, value in environment(root).items():
            monkeypatch.setenv(key, value)
        return root

    return apply


@pytest.fixture(scope="session")
def tiny_predictor(tiny_weights):
    """``with tiny_predictor("predictors.nst.predict", ["vgg19"]) as p:`` -> a Predictor after setup().

    The weights environment stays in force while the block is open, as it would in the container.
    """
    from tools.tiny_weights import environment

    @contextmanager
    def open_predictor(module: str, parts: list[str]):
        root = tiny_weights(parts)
        with pytest.MonkeyPatch.context() as patch:
            for key, value in environment(root).items():
                patch.setenv(key, value)
            predictor = importlib.import_module(module).Predictor()
            predictor.setup()
            yield predictor

    return open_predictor
