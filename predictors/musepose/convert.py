"""Conversion of MusePose's four released ``.pth`` checkpoints into compact safetensors.

Each released file pickles the tensors of one network as views into a whole shared training buffer, so the
files are 0.9-3.4 GB although the tensors they hold are far smaller. This step loads each file once (memory
mapped, so the dead bytes are never read), checks it against the networks that the checkpoint set's own UNet
``config.json`` describes, copies the tensors out, drops the motion modules' ``pos_encoder.pe`` tables
(recomputed at build time, as upstream does) and writes one compact safetensors file per network. ``setup()``
only ever reads the safetensors.

The check is by rule, not by count: the networks are built from the config on the meta device (no memory),
and every file must hold exactly their tensor names with their shapes. With the real release config that
means 686 / 682 / 16 / 588 tensors (tests/musepose/test_musepose_models.py pins those against the published
key lists); another config legitimately gives other counts, for instance equal widths on the first two levels
leave out ``down_blocks.1.resnets.0.conv_shortcut`` (2 tensors fewer in each UNet).

Registered in ``weights_manifest.json`` as the conversion ``musepose_compact``; the predictor hands
``convert_release`` to ``weights.ensure`` under that name.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from predictors.common.errors import WeightsError
from predictors.musepose.models import build_denoising_unet, build_pose_guider, build_reference_unet
from predictors.musepose.models.config import UNET_ADDITIONAL_KWARGS

CONFIG_INPUT = "musepose_unet_config"
PE_SUFFIX = ".pe"
MOTION_MARKER = "motion_modules."
ALLOWED_DTYPES = (torch.float16, torch.float32, torch.bfloat16)
# How many names a message quotes.
QUOTED = 3


@dataclass(frozen=True)
class Checkpoint:
    """One released file: its manifest name, its compact output's name and its file name."""

    source: str
    output: str
    filename: str


CHECKPOINTS = (
    Checkpoint("musepose_denoising_unet", "musepose_denoising_unet_compact", "denoising_unet.pth"),
    Checkpoint("musepose_reference_unet", "musepose_reference_unet_compact", "reference_unet.pth"),
    Checkpoint("musepose_pose_guider", "musepose_pose_guider_compact", "pose_guider.pth"),
    Checkpoint("musepose_motion_module", "musepose_motion_module_compact", "motion_module.pth"),
)

Shapes = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class Expected:
    """What a file must hold: ``required`` names and shapes, plus ``optional`` ones it may carry."""

    required: Shapes
    optional: Shapes


def expected_contents(unet_config: Mapping) -> dict[str, Expected]:
    """Per file name, the tensors that the networks built from ``unet_config`` load from it (meta device)."""
    with torch.device("meta"):
        denoising = build_denoising_unet(unet_config, UNET_ADDITIONAL_KWARGS)
        reference = build_reference_unet(unet_config)
        guider = build_pose_guider(unet_config)

    def shapes(items) -> Shapes:
        return {name: tuple(tensor.shape) for name, tensor in items}

    spatial = shapes(denoising.state_dict().items())
    # The position tables are non-persistent buffers: the release carries them, and they are recomputed.
    tables = shapes((name, buffer) for name, buffer in denoising.named_buffers() if name.endswith(PE_SUFFIX))
    return {
        "denoising_unet.pth": Expected(
            {key: shape for key, shape in spatial.items() if MOTION_MARKER not in key}, {}
        ),
        "reference_unet.pth": Expected(shapes(reference.state_dict().items()), {}),
        "pose_guider.pth": Expected(shapes(guider.state_dict().items()), {}),
        "motion_module.pth": Expected(
            {key: shape for key, shape in spatial.items() if MOTION_MARKER in key}, tables
        ),
    }


def _load(path: Path, spec: Checkpoint) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        raise WeightsError(
            f"{path} could not be read as a PyTorch checkpoint ({error}); "
            f"download MusePose's {spec.filename} again (see weights_manifest.json for its URL)."
        ) from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(
            f"{path} is not a plain state dict of tensors, so it is not MusePose's {spec.filename}."
        )
    return state


def _count(number: int) -> str:
    return f"{number} tensor" if number == 1 else f"{number} tensors"


def _quote(names) -> str:
    names = sorted(names)
    more = f" and {len(names) - QUOTED} more" if len(names) > QUOTED else ""
    return ", ".join(f"'{name}'" for name in names[:QUOTED]) + more


def _family(keys: set[str], expected: dict[str, Expected]) -> str | None:
    """The file whose tensor names ``keys`` are, if they are exactly one file's names."""
    for filename, wanted in expected.items():
        if wanted.required.keys() <= keys <= wanted.required.keys() | wanted.optional.keys():
            return filename
    return None


def check(
    state: dict[str, torch.Tensor], spec: Checkpoint, path: Path, expected: dict[str, Expected]
) -> None:
    """Refuse a file that is not ``spec`` for this config: another network's file, missing or extra
    tensors, a shape the config does not build, or non-float tensors."""
    wanted = expected[spec.filename]
    keys = set(state)
    family = _family(keys, expected)
    problems = []
    if family is not None and family != spec.filename:
        problems.append(f"it holds the tensors of {family}")
    else:
        missing = wanted.required.keys() - keys
        extra = keys - wanted.required.keys() - wanted.optional.keys()
        if missing:
            problems.append(
                f"it lacks {len(missing)} of the {_count(len(wanted.required))} the config builds "
                f"({_quote(missing)})"
            )
        if extra:
            problems.append(f"it has {_count(len(extra))} the config does not build ({_quote(extra)})")
        shapes = {**wanted.optional, **wanted.required}
        wrong = [key for key in sorted(keys & shapes.keys()) if tuple(state[key].shape) != shapes[key]]
        if wrong:
            key = wrong[0]
            problems.append(
                f"{_count(len(wrong))} with another shape than the config builds, such as '{key}' "
                f"{list(state[key].shape)} instead of {list(shapes[key])}"
            )
    dtypes = {tensor.dtype for tensor in state.values()}
    if not dtypes <= set(ALLOWED_DTYPES) or len(dtypes) != 1:
        problems.append(f"its tensors have dtypes {sorted(map(str, dtypes))} instead of one float type")
    if problems:
        raise WeightsError(
            f"{path} is not MusePose's {spec.filename} for its unet/config.json: {'; '.join(problems)}. "
            f"Put the {spec.filename} of the same checkpoint set at that path."
        )


def compact(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Own, contiguous copies of the tensors (outside the shared buffer), without the ``pe`` tables."""
    return {key: tensor.contiguous().clone() for key, tensor in state.items() if not key.endswith(PE_SUFFIX)}


def convert_file(source: Path, destination: Path, spec: Checkpoint, expected: dict[str, Expected]) -> int:
    state = _load(source, spec)
    check(state, spec, source, expected)
    tensors = compact(state)
    destination.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(destination), metadata={"format": "pt", "source": spec.filename})
    return len(tensors)


def read_unet_config(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise WeightsError(
            f"{path} could not be read as the UNet's config.json ({error}); download it again "
            "(see weights_manifest.json for its URL)."
        ) from error


def convert_release(inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
    """The manifest conversion: the four released ``.pth`` (by manifest name) -> compact safetensors,
    each checked against the networks of the UNet ``config.json`` (input ``musepose_unet_config``)."""
    expected = expected_contents(read_unet_config(inputs[CONFIG_INPUT]))
    for spec in CHECKPOINTS:
        convert_file(Path(inputs[spec.source]), Path(outputs[spec.output]), spec, expected)
