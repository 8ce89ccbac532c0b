"""MusePose's denoising UNet: the Stable Diffusion UNet applied frame by frame, plus temporal motion modules.

Upstream's ``UNet3DConditionModel`` is an AnimateDiff UNet: every spatial layer ("inflated" conv, inflated
group norm, spatial transformer) works on each frame separately, and a motion module after each
resnet/attention pair attends across the frames of the window. The spatial part is therefore exactly
diffusers' ``UNet2DConditionModel`` run on a ``(batch * frames)`` batch, so this class borrows its layers
(same key names as the released ``denoising_unet.pth``) and only adds the ``motion_modules`` lists and the
forward pass that interleaves them.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention import BasicTransformerBlock
from torch import nn

from predictors.musepose.models.motion_module import TemporalTransformerBlock, VanillaTemporalModule

# Token rows per feed-forward slice in the motion modules when chunking is on (one row = one pixel's frames).
TEMPORAL_FEED_FORWARD_ROWS = 2048

_SPATIAL_TWINS = {
    "CrossAttnDownBlock3D": "CrossAttnDownBlock2D",
    "DownBlock3D": "DownBlock2D",
    "CrossAttnUpBlock3D": "CrossAttnUpBlock2D",
    "UpBlock3D": "UpBlock2D",
    "UNetMidBlock3DCrossAttn": "UNetMidBlock2DCrossAttn",
}


def spatial_config(unet_config: Mapping) -> dict:
    """A UNet2DConditionModel config for the spatial layers (accepts the 2-D or the 3-D block names)."""
    config = {key: value for key, value in unet_config.items() if not key.startswith("_")}
    config["down_block_types"] = [_SPATIAL_TWINS.get(name, name) for name in config["down_block_types"]]
    config["up_block_types"] = [_SPATIAL_TWINS.get(name, name) for name in config["up_block_types"]]
    if "mid_block_type" in config:
        config["mid_block_type"] = _SPATIAL_TWINS.get(config["mid_block_type"], config["mid_block_type"])
    return config


def _check_supported(kwargs: Mapping) -> None:
    unsupported = []
    if not kwargs.get("use_inflated_groupnorm"):
        unsupported.append("use_inflated_groupnorm must be true")
    if kwargs.get("unet_use_cross_frame_attention") or kwargs.get("unet_use_temporal_attention"):
        unsupported.append(
            "cross-frame / temporal attention inside the spatial blocks is not used by MusePose"
        )
    if kwargs.get("use_motion_module") and kwargs.get("motion_module_type") != "Vanilla":
        unsupported.append("motion_module_type must be 'Vanilla'")
    if unsupported:
        raise ValueError("unsupported UNet3D settings: " + "; ".join(unsupported))


class DenoisingUNet3D(nn.Module):
    """``forward(sample [b, 4, f, h, w], t, context [b, n, d], pose_cond_fea [b, C, f, h, w])``."""

    def __init__(self, unet_config: Mapping, unet_additional_kwargs: Mapping):
        super().__init__()
        _check_supported(unet_additional_kwargs)
        base = UNet2DConditionModel.from_config(spatial_config(unet_config))
        if any(
            getattr(base, name, None) is not None
            for name in ("class_embedding", "encoder_hid_proj", "add_embedding")
        ):
            raise ValueError(
                "class, added or projected conditioning embeddings are not part of MusePose's UNet"
            )
        for name in ("conv_in", "time_proj", "time_embedding", "down_blocks", "mid_block", "up_blocks"):
            setattr(self, name, getattr(base, name))
        self.conv_norm_out, self.conv_act, self.conv_out = base.conv_norm_out, base.conv_act, base.conv_out
        self.num_upsamplers = base.num_upsamplers

        kwargs = unet_additional_kwargs
        motion_kwargs = dict(kwargs.get("motion_module_kwargs", {}))
        resolutions = set(kwargs.get("motion_module_resolutions", ()))
        use_motion = bool(kwargs.get("use_motion_module"))
        depth = len(self.down_blocks)

        def add_motion_modules(block: nn.Module, count: int) -> None:
            channels = block.resnets[-1].out_channels
            block.motion_modules = nn.ModuleList(
                VanillaTemporalModule(channels, **motion_kwargs) for _ in range(count)
            )

        for index, block in enumerate(self.down_blocks):
            if use_motion and 2**index in resolutions and not kwargs.get("motion_module_decoder_only"):
                add_motion_modules(block, len(block.resnets))
        if use_motion and kwargs.get("motion_module_mid_block"):
            add_motion_modules(self.mid_block, len(self.mid_block.attentions))
        for index, block in enumerate(self.up_blocks):
            if use_motion and 2 ** (depth - 1 - index) in resolutions:
                add_motion_modules(block, len(block.resnets))

    def enable_feed_forward_chunking(self, enabled: bool = True) -> None:
        """Run the feed-forward layers, the largest activations (GEGLU: 8x the width), in slices: one frame
        at a time in the spatial blocks, slices of token rows in the motion modules. Results are identical."""
        for module in self.modules():
            if isinstance(module, BasicTransformerBlock):
                module.set_chunk_feed_forward(1 if enabled else None, 0)
            elif isinstance(module, TemporalTransformerBlock):
                module.feed_forward_rows = TEMPORAL_FEED_FORWARD_ROWS if enabled else None

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        encoder_hidden_states: torch.Tensor,
        pose_cond_fea: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch, _, frames, height, width = sample.shape
        hidden = _fold(sample)
        timesteps = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(batch)
        emb = self.time_embedding(self.time_proj(timesteps).to(self.dtype))
        emb = emb.repeat_interleave(frames, dim=0)
        context = encoder_hidden_states.repeat_interleave(frames, dim=0)

        hidden = self.conv_in(hidden)
        if pose_cond_fea is not None:
            hidden = hidden + _fold(pose_cond_fea)

        skips = [hidden]
        for block in self.down_blocks:
            for index, resnet in enumerate(block.resnets):
                hidden = self._layer(block, index, resnet(hidden, emb), context, frames)
                skips.append(hidden)
            for downsampler in block.downsamplers or ():
                hidden = downsampler(hidden)
                skips.append(hidden)

        mid = self.mid_block
        hidden = mid.resnets[0](hidden, emb)
        for index, resnet in enumerate(mid.resnets[1:]):
            hidden = resnet(self._layer(mid, index, hidden, context, frames), emb)

        # Latent sizes that are not multiples of 2**upsamplers need the skip's size to upsample to.
        odd_size = height % 2**self.num_upsamplers or width % 2**self.num_upsamplers
        for block in self.up_blocks:
            for index, resnet in enumerate(block.resnets):
                hidden = resnet(torch.cat([hidden, skips.pop()], dim=1), emb)
                hidden = self._layer(block, index, hidden, context, frames)
            for upsampler in block.upsamplers or ():
                hidden = upsampler(hidden, output_size=skips[-1].shape[2:] if odd_size else None)

        hidden = self.conv_out(self.conv_act(self.conv_norm_out(hidden)))
        return hidden.reshape(batch, frames, *hidden.shape[1:]).transpose(1, 2)

    @staticmethod
    def _layer(block: nn.Module, index: int, hidden: torch.Tensor, context: torch.Tensor, frames: int):
        """Layer ``index``'s spatial transformer (if the block has one), then its motion module (if any)."""
        attentions = getattr(block, "attentions", None)
        if attentions is not None:
            hidden = attentions[index](hidden, encoder_hidden_states=context, return_dict=False)[0]
        motion_modules = getattr(block, "motion_modules", None)
        if motion_modules is not None:
            hidden = motion_modules[index](hidden, frames)
        return hidden


def _fold(video: torch.Tensor) -> torch.Tensor:
    """[b, c, f, h, w] -> [(b f), c, h, w], frames consecutive per batch entry (upstream's order)."""
    batch, channels, frames, height, width = video.shape
    return video.transpose(1, 2).reshape(batch * frames, channels, height, width)
