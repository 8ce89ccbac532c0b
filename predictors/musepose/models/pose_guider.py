"""MusePose's pose guider: a small conv net mapping rendered pose frames to the UNet's first width at 1/8."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# MusePose's pose guider widths (configs/inference_v2.yaml: pose_guider_kwargs.block_out_channels).
BLOCK_OUT_CHANNELS = (16, 32, 96, 256)


class PoseGuider(nn.Module):
    """3 -> BLOCK_OUT_CHANNELS -> C; each stride-2 conv halves the size. Runs frame by frame.

    Key names equal the released ``pose_guider.pth`` (``conv_in``, ``blocks.0-5``, ``conv_out``); upstream
    builds the same convs as "inflated" 3-D convs that apply a 2-D kernel to every frame.
    """

    def __init__(
        self,
        conditioning_embedding_channels: int,
        conditioning_channels: int = 3,
        block_out_channels: Sequence[int] = BLOCK_OUT_CHANNELS,
    ):
        super().__init__()
        self.conv_in = nn.Conv2d(conditioning_channels, block_out_channels[0], kernel_size=3, padding=1)
        blocks = []
        for channel_in, channel_out in itertools.pairwise(block_out_channels):
            blocks.append(nn.Conv2d(channel_in, channel_in, kernel_size=3, padding=1))
            blocks.append(nn.Conv2d(channel_in, channel_out, kernel_size=3, padding=1, stride=2))
        self.blocks = nn.ModuleList(blocks)
        self.conv_out = nn.Conv2d(
            block_out_channels[-1], conditioning_embedding_channels, kernel_size=3, padding=1
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames``: [n, 3, H, W] in [0, 1] -> [n, C, H/8, W/8]."""
        embedding = F.silu(self.conv_in(frames))
        for block in self.blocks:
            embedding = F.silu(block(embedding))
        return self.conv_out(embedding)
