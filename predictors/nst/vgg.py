"""VGG19 feature extractor that loads torchvision's ``vgg19-dcbb9e9d.pth`` unchanged, without torchvision.

Only the ``features`` convolutions up to the deepest requested layer are built. Channel widths come from the
file, so the same code loads the real checkpoint and narrow test checkpoints written in the same layout.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from predictors.common.errors import WeightsError

# torchvision's ``vgg19().features``: five blocks of 3x3 conv + ReLU pairs, each closed by a 2x2 pool.
CONVS_PER_BLOCK = (2, 2, 4, 4, 4)
FEATURES_LAYOUT: tuple[tuple[int, str], ...] = tuple(
    enumerate(
        name
        for block, convs in enumerate(CONVS_PER_BLOCK, start=1)
        for name in (
            *(f"{kind}{block}_{i}" for i in range(1, convs + 1) for kind in ("conv", "relu")),
            f"pool{block}",
        )
    )
)
LAYER_NAMES: tuple[str, ...] = tuple(name for _, name in FEATURES_LAYOUT)
CONV_INDICES: tuple[int, ...] = tuple(i for i, name in FEATURES_LAYOUT if name.startswith("conv"))
CLASSIFIER_INDICES = (0, 3, 6)
EXPECTED_KEYS: tuple[str, ...] = tuple(
    f"{module}.{i}.{param}"
    for module, indices in (("features", CONV_INDICES), ("classifier", CLASSIFIER_INDICES))
    for i in indices
    for param in ("weight", "bias")
)
LAYOUT_HINT = (
    "torchvision's VGG19 layout: features.{0,2,5,7,10,12,14,16,19,21,23,25,28,30,32,34}.{weight,bias} "
    "(3x3 convolutions) and classifier.{0,3,6}.{weight,bias}"
)

# The ImageNet statistics the torchvision weights were trained with (RGB in 0..1).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

POOLINGS = ("max", "avg")
PADDINGS = ("zeros", "reflect", "replicate")

# Average pooling returns the mean of a 2x2 window where max pooling returns its largest value, so deeper
# layers would see smaller activations and the style/content balance tuned for max pooling would drift.
# Model: after a ReLU each unit of a window is active independently with probability 1/2, and the active units
# of a window share one magnitude v (neighbouring activations are strongly correlated). Then
#   E[max]  = v * P(at least one active) = v * (1 - 1/16) = 15/16 v
#   E[mean] = v * E[active count] / 4    = v * 2 / 4      = 1/2 v
# and scaling the average by E[max] / E[mean] = 15/8 matches the expected activation of max pooling.
AVG_POOL_SCALE = 15 / 8
# Above this many pixels the backward pass recomputes activations instead of storing them (2048x2048 would
# otherwise hold about 6 GB of activations; 1024x1024 stays below 2 GB and keeps the faster path).
CHECKPOINT_PIXELS = 1536 * 1536


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The checkpoint's state_dict, checked against torchvision's VGG19 layout (WeightsError otherwise)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"The VGG19 weights file {path} does not exist.") from None
    except Exception as error:
        raise WeightsError(f"The VGG19 weights file {path} could not be read ({error}).") from None
    if not isinstance(state, dict):
        raise WeightsError(f"The VGG19 weights file {path} holds no state_dict; expected {LAYOUT_HINT}.")
    check_layout(state, path)
    return state


def check_layout(state: dict[str, torch.Tensor], path: Path | str = "the VGG19 file") -> None:
    """Raise WeightsError naming the first missing or unexpected key, or a shape that breaks the chain."""
    missing = [key for key in EXPECTED_KEYS if key not in state]
    unexpected = sorted(set(state) - set(EXPECTED_KEYS))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(
                f"missing key {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if missing[1:] else "")
            )
        if unexpected:
            parts.append(
                f"unexpected key {unexpected[0]!r}"
                + (f" (and {len(unexpected) - 1} more)" if unexpected[1:] else "")
            )
        raise WeightsError(f"{path} is not a VGG19 checkpoint: {', '.join(parts)}; expected {LAYOUT_HINT}.")
    channels = 3
    for index in CONV_INDICES:
        weight, bias = state[f"features.{index}.weight"], state[f"features.{index}.bias"]
        if weight.ndim != 4 or weight.shape[1] != channels or weight.shape[2:] != (3, 3):
            raise WeightsError(
                f"{path}: features.{index}.weight has shape {tuple(weight.shape)}, expected "
                f"(out, {channels}, 3, 3) in {LAYOUT_HINT}."
            )
        if bias.shape != (weight.shape[0],):
            raise WeightsError(
                f"{path}: features.{index}.bias has shape {tuple(bias.shape)}, expected ({weight.shape[0]},)."
            )
        channels = weight.shape[0]


class VGGFeatures(nn.Module):
    """Maps RGB images in 0..1, shape (N, 3, H, W), to the activations of the requested layers."""

    def __init__(
        self,
        state: dict[str, torch.Tensor],
        layers: Iterable[str],
        *,
        pooling: str = "max",
        padding: str = "zeros",
    ):
        super().__init__()
        self.layers = tuple(dict.fromkeys(layers))
        unknown = [name for name in self.layers if name not in LAYER_NAMES]
        if unknown or not self.layers:
            raise ValueError(f"Unknown VGG19 layer(s) {unknown}; choose from {', '.join(LAYER_NAMES)}.")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        self.pooling = pooling
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        deepest = max(LAYER_NAMES.index(name) for name in self.layers)
        self.names = LAYER_NAMES[: deepest + 1]
        wanted = set(self.layers)
        modules: list[nn.Module] = []
        for index, name in FEATURES_LAYOUT[: deepest + 1]:
            if name.startswith("conv"):
                weight = state[f"features.{index}.weight"]
                conv = nn.Conv2d(weight.shape[1], weight.shape[0], 3, padding=1, padding_mode=padding)
                conv.weight.data.copy_(weight)
                conv.bias.data.copy_(state[f"features.{index}.bias"])
                modules.append(conv)
            elif name.startswith("relu"):
                # In place saves one activation per layer, except where the conv output itself is requested.
                modules.append(nn.ReLU(inplace=LAYER_NAMES[index - 1] not in wanted))
            else:
                modules.append(nn.MaxPool2d(2) if pooling == "max" else nn.AvgPool2d(2))
        self.body = nn.ModuleList(modules)
        pools = [i + 1 for i, name in enumerate(self.names) if name.startswith("pool")]
        edges = [0, *[p for p in pools if p < len(self.names)], len(self.names)]
        self._blocks = list(itertools.pairwise(edges))
        self.checkpoint_pixels = CHECKPOINT_PIXELS
        self.requires_grad_(False)
        self.eval()

    def _run(self, x: torch.Tensor, start: int, stop: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        features = {}
        for name, module in zip(self.names[start:stop], self.body[start:stop], strict=True):
            x = module(x)
            if isinstance(module, nn.AvgPool2d):
                x = x * AVG_POOL_SCALE
            if name in self.layers:
                features[name] = x
        return x, features

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (image - self.mean) / self.std
        large = image.shape[-2] * image.shape[-1] > self.checkpoint_pixels
        if not (large and torch.is_grad_enabled() and x.requires_grad):
            return self._run(x, 0, len(self.names))[1]
        # Large images: keep only each block's input and requested outputs for the backward pass and recompute
        # the rest of the block there. Costs about one more forward pass; saves most activation memory.
        features = {}
        for start, stop in self._blocks:
            x, found = checkpoint(self._run, x, start, stop, use_reentrant=False)
            features.update(found)
        return features
