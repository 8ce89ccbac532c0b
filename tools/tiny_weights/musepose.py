"""Tiny weights part "musepose": MusePose's release layout with narrow widths.

Writes, under ``musepose/``:
- ``MusePose/{denoising_unet,reference_unet,pose_guider,motion_module}.pth``: ``torch.save``'d plain
  ``{key: tensor}`` dicts in float16 with the release's key sets (686 / 682 / 16 / 588, the motion modules'
  ``pos_encoder.pe`` tables included). Like the released files, every tensor is a view into one shared buffer,
  so each file carries the whole buffer plus dead bytes; the ``musepose_compact`` conversion strips that.
- ``sd-image-variations-diffusers/unet/config.json``,
  ``sd-vae-ft-mse/{config.json,diffusion_pytorch_model.bin}`` and ``image_encoder/{config.json,
  pytorch_model.bin}``: the upstream configs (same keys) with the widths below, float32 ``.bin`` state dicts.

Only widths and depths shrink: UNet widths 32/64/96/96 (real 320/640/1280/1280) with cross-attention width 32
(768), VAE widths 32 (128-512), CLIP hidden 32 (1024) with 2 layers (24), patch 32 (14), projection 32 (768).
The pose guider's output width follows the UNet's first width (32; real 320).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from predictors.musepose.models import build_denoising_unet, build_pose_guider, build_reference_unet
from predictors.musepose.models.motion_module import PositionalEncoding
from predictors.musepose.pipeline import POSE_GUIDER_BLOCKS, UNET_ADDITIONAL_KWARGS
from tools.tiny_weights import dest

UNET_CONFIG = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.9.0",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [32, 64, 96, 96],
    "center_input_sample": False,
    "cross_attention_dim": 32,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "use_linear_projection": False,
}
VAE_CONFIG = {
    "_class_name": "AutoencoderKL",
    "_diffusers_version": "0.4.2",
    "act_fn": "silu",
    "block_out_channels": [32, 32, 32, 32],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 256,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
IMAGE_ENCODER_CONFIG = {
    "architectures": ["CLIPVisionModelWithProjection"],
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "hidden_act": "quick_gelu",
    "hidden_size": 32,
    "image_size": 224,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 64,
    "layer_norm_eps": 1e-05,
    "model_type": "clip_vision_model",
    "num_attention_heads": 2,
    "num_channels": 3,
    "num_hidden_layers": 2,
    "patch_size": 32,
    "projection_dim": 32,
    "transformers_version": "4.25.1",
}
# The real widths (sd-image-variations UNet, sd-vae-ft-mse, CLIP ViT-L/14), for benchmarks on random weights.
FULL_UNET_CONFIG = {**UNET_CONFIG, "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768}
FULL_VAE_CONFIG = {**VAE_CONFIG, "block_out_channels": [128, 256, 512, 512]}
FULL_IMAGE_ENCODER_CONFIG = {
    **IMAGE_ENCODER_CONFIG,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_attention_heads": 16,
    "num_hidden_layers": 24,
    "patch_size": 14,
    "projection_dim": 768,
}
# Unused bytes after the tensors in the shared buffer, standing in for the release's training state.
DEAD_ELEMENTS = 1 << 18


def release_state_dicts(seed: int, unet_config: dict = UNET_CONFIG) -> dict[str, dict[str, torch.Tensor]]:
    """The four release dicts (float32, random) for ``unet_config``, keyed by file stem."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        denoising = build_denoising_unet(unet_config, UNET_ADDITIONAL_KWARGS)
        reference = build_reference_unet(unet_config)
        guider = build_pose_guider(unet_config["block_out_channels"][0], POSE_GUIDER_BLOCKS)
    state = denoising.state_dict()
    motion = {key: value for key, value in state.items() if "motion_modules" in key}
    for name, module in denoising.named_modules():
        if isinstance(module, PositionalEncoding):
            motion[f"{name}.pe"] = module.pe
    return {
        "denoising_unet": {key: value for key, value in state.items() if "motion_modules" not in key},
        "reference_unet": reference.state_dict(),
        "pose_guider": guider.state_dict(),
        "motion_module": motion,
    }


def _share_one_buffer(dicts: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, torch.Tensor]]:
    """float16 views into a single buffer (with dead space), so that each saved file holds all of it."""
    total = sum(tensor.numel() for state in dicts.values() for tensor in state.values())
    buffer = torch.zeros(total + DEAD_ELEMENTS, dtype=torch.float16)
    offset = 0
    shared = {}
    for stem, state in dicts.items():
        shared[stem] = {}
        for key, tensor in state.items():
            view = buffer[offset : offset + tensor.numel()].view(tensor.shape)
            view.copy_(tensor.detach())
            shared[stem][key] = view
            offset += tensor.numel()
    return shared


def _write_config(path: Path, config: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def write(root: Path, seed: int, unet_config: dict = UNET_CONFIG) -> None:
    """The tiny set; another ``unet_config`` (other widths, heads) writes a set that follows it."""
    for stem, state in _share_one_buffer(release_state_dicts(seed, unet_config)).items():
        path = root / dest(f"musepose_{stem}")
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, path)
    _write_config(root / dest("musepose_unet_config"), unet_config)

    with torch.random.fork_rng():
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL.from_config({k: v for k, v in VAE_CONFIG.items() if not k.startswith("_")})
        encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**IMAGE_ENCODER_CONFIG))
    _write_config(root / dest("musepose_vae_config"), VAE_CONFIG)
    torch.save(vae.state_dict(), root / dest("musepose_vae"))
    _write_config(root / dest("musepose_image_encoder_config"), IMAGE_ENCODER_CONFIG)
    torch.save(encoder.state_dict(), root / dest("musepose_image_encoder"))
