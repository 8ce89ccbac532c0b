"""Tiny LCM-LoRA files in the published format, for the sd_style turbo mode.

latent-consistency/lcm-lora-sdv1-5 and lcm-lora-sdxl are single ``pytorch_lora_weights.safetensors`` files in
the kohya-ss layout: for every adapted module of the UNet, ``lora_unet_<diffusers module path with "_" for
".">`` followed by ``.lora_down.weight`` (rank x in), ``.lora_up.weight`` (out x rank) and ``.alpha`` (a
scalar); convolutions keep their kernel in the down weight and a 1x1 kernel in the up weight. The modules are
those of diffusers' LCM-LoRA distillation script (``examples/consistency_distillation``): attention
projections, feed-forwards, transformer in/out projections, resnet convolutions and time projections,
down/upsampler convolutions. The published files use rank 64 with alpha 8, so the update is scaled by 1/8;
the tiny files keep that scale at rank 4. diffusers reads this layout with ``load_lora_weights``
(``_convert_non_diffusers_lora_to_diffusers``), the same call the predictor makes for the real files.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

WEIGHT_NAME = "pytorch_lora_weights.safetensors"
RANK = 4
PUBLISHED_RANK = 64
SCALE = 8 / PUBLISHED_RANK  # the published files' alpha / rank, kept at any rank
# The module names the LCM-LoRA distillation adapts, matched against the end of each UNet module path.
TARGETS = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
    "conv1",
    "conv2",
    "conv_shortcut",
    "downsamplers.0.conv",
    "upsamplers.0.conv",
    "time_emb_proj",
)


def adapted_modules(unet) -> dict[str, torch.nn.Module]:
    """The UNet's Linear and Conv2d modules an LCM-LoRA adapts, by module path."""
    return {
        name: module
        for name, module in unet.named_modules()
        if isinstance(module, torch.nn.Linear | torch.nn.Conv2d)
        and any(name == target or name.endswith("." + target) for target in TARGETS)
    }


def lcm_lora_tensors(unet, seed: int, rank: int = RANK) -> dict[str, torch.Tensor]:
    """Random LCM-LoRA tensors for ``unet`` under the published key names, fp16 as published."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, module in adapted_modules(unet).items():
        key = "lora_unet_" + name.replace(".", "_")
        weight = module.weight
        if isinstance(module, torch.nn.Conv2d):
            down_shape = (rank, weight.shape[1], *weight.shape[2:])
            up_shape = (weight.shape[0], rank, 1, 1)
        else:
            down_shape, up_shape = (rank, weight.shape[1]), (weight.shape[0], rank)
        # Large enough that the fused UNet differs clearly from the base one at every adapted module.
        tensors[f"{key}.lora_down.weight"] = torch.randn(down_shape, generator=generator) * 0.5
        tensors[f"{key}.lora_up.weight"] = torch.randn(up_shape, generator=generator) * 0.5
        tensors[f"{key}.alpha"] = torch.tensor(SCALE * rank)
    return {key: value.to(torch.float16) for key, value in tensors.items()}


def write_lcm_lora(folder: Path, unet, seed: int, rank: int = RANK) -> Path:
    """Write ``folder/pytorch_lora_weights.safetensors`` for ``unet``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / WEIGHT_NAME
    save_file(lcm_lora_tensors(unet, seed, rank), str(path))
    return path
