"""Models built from the REAL configs match the reference key/shape facts (meta tensors only)."""

from __future__ import annotations

import json

import pytest
import torch

from predictors.sd_style.pipeline import FAMILIES

REAL = {
    "sd15": {
        "unet": "sd15_runwayml/unet/config.json",
        "controlnet": "controlnet/control_v11p_sd15_canny.config.reconstructed.json",
        "controlnet_params": 361_279_120,
        "adapter": "models__ip-adapter_sd15.shapes.json",
        "encoder": "h94_IP-Adapter__models__image_encoder__config.json",
    },
    "sdxl": {
        "unet": "sdxl_base_1.0/unet/config.json",
        "controlnet": "controlnet/controlnet-canny-sdxl-1.0.config.reconstructed.json",
        "controlnet_params": 1_251_014_160,
        "adapter": "sdxl_models__ip-adapter_sdxl_vit-h.shapes.json",
        "encoder": "h94_IP-Adapter__models__image_encoder__config.json",
    },
}


def _read(reference_dir, relative):
    return json.loads((reference_dir / "sd" / relative).read_text())


def _meta_unet(reference_dir, family):
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    with init_empty_weights():
        return UNet2DConditionModel.from_config(_read(reference_dir, REAL[family]["unet"]))


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_real_adapter_shapes_load_into_the_real_unet(reference_dir, family):
    """diffusers' IP-Adapter loader accepts the exact key/shape map of the file we load, on the real UNet."""
    unet = _meta_unet(reference_dir, family)
    spec = _read(reference_dir, f"ip_adapter_specs/{REAL[family]['adapter']}")
    state = {
        group: {key: torch.empty(shape, dtype=torch.float16, device="meta") for key, shape in tensors.items()}
        for group, tensors in spec.items()
    }
    assert FAMILIES[family].ip_adapter_weight.removesuffix(".safetensors") in REAL[family]["adapter"]
    unet._load_ip_adapter_weights([state], low_cpu_mem_usage=True)
    processors = [(name, p) for name, p in unet.attn_processors.items() if hasattr(p, "to_k_ip")]
    assert len(processors) == len(spec["ip_adapter"]) // 2  # 16 on SD1.5, 70 on SDXL
    for index, (_, processor) in enumerate(processors):
        key = f"{2 * index + 1}.to_k_ip.weight"
        assert list(processor.to_k_ip[0].weight.shape) == spec["ip_adapter"][key]
    # The adapter's projection takes the image encoder's embedding: ViT-H (1024) for both families here.
    projection = unet.encoder_hid_proj.image_projection_layers[0].image_embeds
    assert projection.in_features == _read(reference_dir, REAL[family]["encoder"])["projection_dim"]


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_real_controlnet_parameter_counts(reference_dir, family):
    from accelerate import init_empty_weights
    from diffusers import ControlNetModel

    with init_empty_weights():
        controlnet = ControlNetModel.from_config(_read(reference_dir, REAL[family]["controlnet"]))
        derived = ControlNetModel.from_unet(_meta_unet(reference_dir, family), load_weights_from_unet=False)
    assert sum(p.numel() for p in controlnet.parameters()) == REAL[family]["controlnet_params"]
    assert sum(p.numel() for p in derived.parameters()) == REAL[family]["controlnet_params"]


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_tiny_configs_keep_the_real_structure(reference_dir, family):
    """Only widths shrink in the tiny models: block types, layers per block and conditioning stay real."""
    from tools.tiny_weights import sd15, sdxl

    tiny = (sd15 if family == "sd15" else sdxl).UNET_CONFIG
    real = _read(reference_dir, REAL[family]["unet"])
    for key in ("down_block_types", "up_block_types", "layers_per_block", "in_channels", "out_channels"):
        assert tiny[key] == real[key], key
    assert tiny.get("addition_embed_type") == real.get("addition_embed_type")
    assert len(tiny["block_out_channels"]) == len(real["block_out_channels"])
