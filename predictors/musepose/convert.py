"""Conversion of MusePose's four released ``.pth`` checkpoints into compact safetensors.

Each released file pickles the tensors of one network as views into a whole shared training buffer, so the
files are 0.9-3.4 GB although the tensors they hold are far smaller. This step loads each file once (memory
mapped, so the dead bytes are never read), checks that it is the file it claims to be, copies the tensors
out, drops the motion modules' ``pos_encoder.pe`` tables (recomputed at build time, as upstream does) and
writes one compact safetensors file per network. ``setup()`` only ever reads the safetensors.

Registered in ``weights_manifest.json`` as the conversion ``musepose_compact`` with the function
``predictors.musepose.convert:convert_release``.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from predictors.common.errors import WeightsError


@dataclass(frozen=True)
class Checkpoint:
    """One released file: its manifest name, its compact output's name and what it must contain."""

    source: str
    output: str
    filename: str
    keys: int
    must_have: str
    must_not_have: tuple[str, ...] = ()


CHECKPOINTS = (
    Checkpoint(
        "musepose_denoising_unet",
        "musepose_denoising_unet_compact",
        "denoising_unet.pth",
        686,
        "conv_out.weight",
        ("motion_modules",),
    ),
    Checkpoint(
        "musepose_reference_unet",
        "musepose_reference_unet_compact",
        "reference_unet.pth",
        682,
        "up_blocks.3.attentions.2.transformer_blocks.0.attn1.to_q.weight",
        ("conv_out.weight", "motion"),
    ),
    Checkpoint(
        "musepose_pose_guider",
        "musepose_pose_guider_compact",
        "pose_guider.pth",
        16,
        "conv_out.weight",
        ("down_blocks",),
    ),
    Checkpoint(
        "musepose_motion_module",
        "musepose_motion_module_compact",
        "motion_module.pth",
        588,
        "mid_block.motion_modules.0.temporal_transformer.proj_out.weight",
        ("attentions.",),
    ),
)
PE_SUFFIX = ".pe"
ALLOWED_DTYPES = (torch.float16, torch.float32, torch.bfloat16)


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


def check(state: dict[str, torch.Tensor], spec: Checkpoint, path: Path) -> None:
    """Refuse a file that is not ``spec``: wrong key count, wrong family of keys, or non-float tensors."""
    problems = []
    if len(state) != spec.keys:
        problems.append(f"it holds {len(state)} tensors instead of {spec.keys}")
    if spec.must_have not in state:
        problems.append(f"it has no '{spec.must_have}'")
    stray = [key for key in state if any(marker in key for marker in spec.must_not_have)]
    if stray:
        problems.append(f"it has keys of another network such as '{stray[0]}'")
    dtypes = {tensor.dtype for tensor in state.values()}
    if not dtypes <= set(ALLOWED_DTYPES) or len(dtypes) != 1:
        problems.append(f"its tensors have dtypes {sorted(map(str, dtypes))} instead of one float type")
    if problems:
        raise WeightsError(
            f"{path} is not MusePose's {spec.filename}: {'; '.join(problems)}. "
            f"Put the released {spec.filename} at that path."
        )


def compact(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Own, contiguous copies of the tensors (outside the shared buffer), without the ``pe`` tables."""
    return {key: tensor.contiguous().clone() for key, tensor in state.items() if not key.endswith(PE_SUFFIX)}


def convert_file(source: Path, destination: Path, spec: Checkpoint) -> int:
    state = _load(source, spec)
    check(state, spec, source)
    tensors = compact(state)
    destination.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(destination), metadata={"format": "pt", "source": spec.filename})
    return len(tensors)


def convert_release(inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
    """The manifest conversion: the four released ``.pth`` (by manifest name) -> compact safetensors."""
    for spec in CHECKPOINTS:
        convert_file(Path(inputs[spec.source]), Path(outputs[spec.output]), spec)
