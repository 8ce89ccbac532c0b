"""Tiny SDXL style-transfer weights in the real folder layouts.

Writes, with random weights and shrunk widths/depths but the real block structure, file names and configs:
- ``sdxl/stable-diffusion-xl-base-1.0/``: model_index.json, unet, vae, text_encoder, text_encoder_2,
  tokenizer, tokenizer_2, scheduler; weights as the ``fp16`` variant files;
- ``sdxl/controlnet-canny-sdxl-1.0/``: a ControlNet matching the UNet;
- ``ip_adapter/sdxl_models/ip-adapter_sdxl_vit-h.safetensors``;
- ``sdxl/lcm-lora-sdxl/``: the turbo LCM-LoRA for the UNet (``tools/tiny_weights/lora.py``);
- the parts SDXL shares with SD1.5: the ViT-H image encoder and the safety checker (same bytes as the sd15
  part writes for the same seed).
"""

from __future__ import annotations

from pathlib import Path

import torch

from tools.tiny_weights import dest
from tools.tiny_weights.sd15 import (
    IMAGE_ENCODER_CONFIG,
    IP_ADAPTER_ROOT,
    TEXT_ENCODER_CONFIG,
    VAE_CONFIG,
    controlnet_config,
    ip_adapter_tensors,
    ldm_base_tensors,
    randomize_zero_init,
    save_fp16_variant,
    save_single_file,
    seeded,
    write_ip_adapter,
    write_json,
    write_models,
    write_text_encoder,
    write_tokenizer,
)

BASE = dest("sdxl_base")
CANNY = dest("controlnet-canny-sdxl-1.0")
LCM_LORA = dest("lcm-lora-sdxl")

MODEL_INDEX = {
    "_class_name": "StableDiffusionXLPipeline",
    "_diffusers_version": "0.19.0.dev0",
    "force_zeros_for_empty_prompt": True,
    "add_watermarker": None,
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
SCHEDULER_CONFIG = {
    "_class_name": "EulerDiscreteScheduler",
    "_diffusers_version": "0.19.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}
# Wider than text_encoder, as in the real model: single-file loaders tell the two encoders apart by width.
TEXT_ENCODER_2_CONFIG = {
    **TEXT_ENCODER_CONFIG,
    "architectures": ["CLIPTextModelWithProjection"],
    "hidden_act": "gelu",
    "hidden_size": 48,
    "intermediate_size": 96,
    "projection_dim": 32,
}
ADDITION_TIME_EMBED_DIM = 8
# Real SDXL UNet structure (block types, layers per block, text_time conditioning), widths and depths shrunk.
UNET_CONFIG = {
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": ADDITION_TIME_EMBED_DIM,
    "attention_head_dim": [2, 4, 4],
    "block_out_channels": [16, 32, 32],
    "center_input_sample": False,
    "cross_attention_dim": TEXT_ENCODER_CONFIG["hidden_size"] + TEXT_ENCODER_2_CONFIG["hidden_size"],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 8,
    "out_channels": 4,
    # Six time ids (original size, crop, target size) plus the pooled text embedding of text_encoder_2.
    "projection_class_embeddings_input_dim": 6 * ADDITION_TIME_EMBED_DIM
    + TEXT_ENCODER_2_CONFIG["projection_dim"],
    "sample_size": 128,
    "transformer_layers_per_block": [1, 2, 2],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "use_linear_projection": True,
}
SDXL_VAE_CONFIG = {**VAE_CONFIG, "force_upcast": True, "sample_size": 1024, "scaling_factor": 0.13025}


def write(root: Path, seed: int) -> None:
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

    base = root / BASE
    write_json(base / "model_index.json", MODEL_INDEX)
    write_json(base / "scheduler" / "scheduler_config.json", SCHEDULER_CONFIG)
    vocab_size = write_tokenizer(base / "tokenizer")
    write_tokenizer(base / "tokenizer_2", pad_token="!")
    write_text_encoder(base / "text_encoder", TEXT_ENCODER_CONFIG, vocab_size, seed, 11, "CLIPTextModel")
    write_text_encoder(
        base / "text_encoder_2", TEXT_ENCODER_2_CONFIG, vocab_size, seed, 12, "CLIPTextModelWithProjection"
    )

    seeded(seed, 13)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    seeded(seed, 14)
    vae = AutoencoderKL(**SDXL_VAE_CONFIG)
    seeded(seed, 15)
    controlnet = ControlNetModel(**controlnet_config(UNET_CONFIG, [8, 8, 16, 16]))
    randomize_zero_init(controlnet, seed, 115)
    save_fp16_variant(controlnet, root / CANNY)

    write_ip_adapter(
        root / IP_ADAPTER_ROOT / "sdxl_models",
        "ip-adapter_sdxl_vit-h",
        ip_adapter_tensors(unet, IMAGE_ENCODER_CONFIG["projection_dim"], seed, 16),
        # The predictor reads the .safetensors file; the 700 MB .bin twin is not in the manifest.
        with_bin=False,
    )
    write_models(root, base, unet, vae, LCM_LORA, seed, salt=17)


# Single-file (original SGM layout) checkpoint of the tiny base model, for tests of custom checkpoints.

_OPEN_CLIP_LAYER_NAMES = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}
_OPEN_CLIP_TOP_LEVEL = {
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}


def open_clip_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers ``CLIPTextModelWithProjection`` state dict in OpenCLIP's layout (fused q/k/v
    ``in_proj``, ``resblocks``, ``text_projection`` stored transposed)."""
    converted = {"text_projection": tensors["text_projection.weight"].T}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key in _OPEN_CLIP_TOP_LEVEL:
            converted[_OPEN_CLIP_TOP_LEVEL[key]] = value
            continue
        if not key.startswith("text_model.encoder.layers."):
            continue
        layer, name = key.removeprefix("text_model.encoder.layers.").split(".", 1)
        prefix = f"transformer.resblocks.{layer}."
        if name.startswith("self_attn.") and name.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
            projection, kind = name.split(".")[1:]
            fused.setdefault(f"{prefix}attn.in_proj_{kind}", {})[projection] = value
            continue
        module, kind = name.rsplit(".", 1)
        converted[f"{prefix}{_OPEN_CLIP_LAYER_NAMES[module]}.{kind}"] = value
    for key, parts in fused.items():
        converted[key] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]])
    return converted


def write_single_file(root: Path, path: Path) -> Path:
    """Write the tiny SDXL base (UNet, VAE, both text encoders) as one original-layout ``.safetensors``."""
    from safetensors.torch import load_file

    base = root / BASE
    tensors = ldm_base_tensors(base)
    for key, value in load_file(base / "text_encoder" / "model.fp16.safetensors").items():
        tensors["conditioner.embedders.0.transformer." + key] = value
    second = load_file(base / "text_encoder_2" / "model.fp16.safetensors")
    for key, value in open_clip_tensors(second).items():
        tensors["conditioner.embedders.1.model." + key] = value
    return save_single_file(tensors, path)
