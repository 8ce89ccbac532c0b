"""MusePose's networks: ReferenceNet (a stock diffusers UNet2DConditionModel), the denoising UNet3D with
motion modules, the pose guider, and the reference-attention processors that connect the two UNets."""

from __future__ import annotations

from collections.abc import Mapping

from diffusers import UNet2DConditionModel
from torch import nn

from predictors.musepose.models.pose_guider import PoseGuider
from predictors.musepose.models.reference_attention import (
    ReferenceBank,
    install_reference_readers,
    install_reference_writers,
    reference_block_names,
)
from predictors.musepose.models.unet3d import DenoisingUNet3D, spatial_config

__all__ = [
    "DenoisingUNet3D",
    "PoseGuider",
    "ReferenceBank",
    "build_denoising_unet",
    "build_pose_guider",
    "build_reference_unet",
    "install_reference_readers",
    "install_reference_writers",
    "reference_block_names",
]


def build_reference_unet(unet_config: Mapping) -> UNet2DConditionModel:
    """The ReferenceNet. Its output is never used (only its blocks' self-attention inputs are), and the
    released ``reference_unet.pth`` has no ``conv_norm_out``/``conv_out``, so those layers are removed."""
    unet = UNet2DConditionModel.from_config(spatial_config(unet_config))
    unet.conv_norm_out = None
    unet.conv_act = None
    unet.conv_out = nn.Identity()
    return unet


def build_denoising_unet(unet_config: Mapping, unet_additional_kwargs: Mapping) -> DenoisingUNet3D:
    return DenoisingUNet3D(unet_config, unet_additional_kwargs)


def build_pose_guider(unet_config: Mapping) -> PoseGuider:
    """The pose guider whose output adds to the UNet's first level (``conv_in``'s width)."""
    return PoseGuider(unet_config["block_out_channels"][0])
