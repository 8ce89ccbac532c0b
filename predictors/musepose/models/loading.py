"""MusePose's networks built from the checkpoint set's UNet config and filled from compact safetensors."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file
from transformers import CLIPVisionModelWithProjection

from predictors.musepose.models import (
    DenoisingUNet3D,
    PoseGuider,
    build_denoising_unet,
    build_pose_guider,
    build_reference_unet,
)
from predictors.musepose.models.config import UNET_ADDITIONAL_KWARGS
from predictors.musepose.models.motion_module import PositionalEncoding, sinusoidal_table


@dataclass
class MusePoseModels:
    vae: AutoencoderKL
    image_encoder: CLIPVisionModelWithProjection
    reference_unet: torch.nn.Module
    denoising_unet: DenoisingUNet3D
    pose_guider: PoseGuider

    def to(self, device: torch.device, dtype: torch.dtype) -> MusePoseModels:
        for module in (
            self.vae,
            self.image_encoder,
            self.reference_unet,
            self.denoising_unet,
            self.pose_guider,
        ):
            module.to(device=device, dtype=dtype).eval().requires_grad_(False)
        return self


def _load_strict(module: torch.nn.Module, *paths: Path) -> None:
    """Fill a meta-built module from compact safetensors files, then rebuild the non-persistent pe tables."""
    state = {}
    for path in paths:
        state.update(load_file(str(path)))
    module.load_state_dict(state, strict=True, assign=True)
    for submodule in module.modules():
        if isinstance(submodule, PositionalEncoding):
            max_len, channels = submodule.pe.shape[1:]
            submodule.pe = sinusoidal_table(max_len, channels)


def load_models(
    *,
    unet_config: Path,
    denoising_unet: Path,
    motion_module: Path,
    reference_unet: Path,
    pose_guider: Path,
    vae: Path,
    image_encoder: Path,
) -> MusePoseModels:
    """Build the networks on the meta device and fill them from the compact safetensors (nothing loads twice).

    ``unet_config`` is sd-image-variations' ``unet/config.json``; its weights are not needed, because
    MusePose's checkpoints replace every UNet tensor. ``vae`` and ``image_encoder`` are diffusers/transformers
    folders.
    """
    config = json.loads(Path(unet_config).read_text())
    with torch.device("meta"):
        reference = build_reference_unet(config)
        denoising = build_denoising_unet(config, UNET_ADDITIONAL_KWARGS)
        guider = build_pose_guider(config)
    _load_strict(reference, reference_unet)
    _load_strict(denoising, denoising_unet, motion_module)
    _load_strict(guider, pose_guider)
    return MusePoseModels(
        # The release layout ships .bin files (the manifest names them); no safetensors lookup first.
        vae=AutoencoderKL.from_pretrained(vae, use_safetensors=False),
        image_encoder=CLIPVisionModelWithProjection.from_pretrained(image_encoder, use_safetensors=False),
        reference_unet=reference,
        denoising_unet=denoising,
        pose_guider=guider,
    )
