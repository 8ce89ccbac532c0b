"""Tiny SD1.5 style-transfer weights in the real folder layouts.

Writes, with random weights and shrunk widths/depths but the real block structure, file names and configs:
- ``sd15/stable-diffusion-v1-5/``: model_index.json, unet, vae, text_encoder, tokenizer (a small BPE
  vocabulary and merges written here), scheduler, safety_checker, feature_extractor; weights as the ``fp16``
  variant files;
- ``sd15/control_v11p_sd15_canny/`` and ``sd15/control_v11f1e_sd15_tile/``: ControlNets matching the UNet;
- ``ip_adapter/models/``: ``ip-adapter_sd15.safetensors`` and ``.bin`` (same tensors) and ``image_encoder/``;
- ``sd15/lcm-lora-sdv1-5/``: the turbo LCM-LoRA for the UNet (``tools/tiny_weights/lora.py``).

The helpers here are shared with the SDXL part, which reuses the image encoder and the safety checker.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from tools.tiny_weights import dest
from tools.tiny_weights.lora import write_lcm_lora

BASE = dest("sd15_base")
CANNY = dest("control_v11p_sd15_canny")
TILE = dest("control_v11f1e_sd15_tile")
LCM_LORA = dest("lcm-lora-sdv1-5")
IP_ADAPTER_ROOT = dest("ip_adapter")
IMAGE_ENCODER = f"{IP_ADAPTER_ROOT}/models/image_encoder"

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
# Words the tests and docs prompt with; each becomes a whole token, everything else falls back to bytes.
WORDS = (
    *("a", "photo", "of", "the", "cat", "dog", "house", "portrait", "painting", "in", "style", "oil"),
    *("watercolor", "sketch", "city", "street", "lowres", "blurry", "deformed", "watermark", "text"),
    *("signature", "bad", "anatomy", "jpeg", "artifacts", "ugly", ",", "."),
)

SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}
FEATURE_EXTRACTOR_CONFIG = {
    "crop_size": 224,
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "size": 224,
}
MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.6.0",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}

# Real SD1.5 UNet structure (block types, layers per block), widths shrunk.
UNET_CONFIG = {
    "act_fn": "silu",
    "attention_head_dim": 2,
    "block_out_channels": [16, 32, 32, 32],
    "center_input_sample": False,
    "cross_attention_dim": 32,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 8,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
VAE_CONFIG = {
    "act_fn": "silu",
    "block_out_channels": [8, 16, 16, 16],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "out_channels": 3,
    "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
TEXT_ENCODER_CONFIG = {
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "quick_gelu",
    "hidden_size": 32,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 64,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "pad_token_id": 1,
    "projection_dim": 32,
}
TINY_VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "image_size": 224,
    "patch_size": 14,
    "num_channels": 3,
    "layer_norm_eps": 1e-05,
}
IMAGE_ENCODER_CONFIG = {
    "architectures": ["CLIPVisionModelWithProjection"],
    "hidden_act": "gelu",
    "model_type": "clip_vision_model",
    "projection_dim": 16,
    **TINY_VISION,
}


def controlnet_config(unet_config: dict, conditioning_channels: list[int]) -> dict:
    """A ControlNet config mirroring ``unet_config``, as the real canny/tile ControlNets mirror theirs."""
    keep = (
        "act_fn",
        "attention_head_dim",
        "block_out_channels",
        "cross_attention_dim",
        "down_block_types",
        "downsample_padding",
        "flip_sin_to_cos",
        "freq_shift",
        "in_channels",
        "layers_per_block",
        "norm_eps",
        "norm_num_groups",
        "mid_block_scale_factor",
        "use_linear_projection",
        "transformer_layers_per_block",
        "addition_embed_type",
        "addition_time_embed_dim",
        "projection_class_embeddings_input_dim",
        "upcast_attention",
    )
    config = {key: value for key, value in unet_config.items() if key in keep}
    config["conditioning_embedding_out_channels"] = conditioning_channels
    config["controlnet_conditioning_channel_order"] = "rgb"
    return config


def bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable character table of byte-level BPE (GPT-2 / CLIP)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


def clip_bpe(words=WORDS) -> tuple[dict[str, int], list[str]]:
    """A small CLIP-style BPE: all bytes (and end-of-word forms), merges building ``words``, specials."""
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars]
    merges: list[str] = []
    for word in words:
        symbols = [*word[:-1], word[-1] + "</w>"]
        while len(symbols) > 1:
            merged = symbols[0] + symbols[1]
            rule = f"{symbols[0]} {symbols[1]}"
            if rule not in merges:
                merges.append(rule)
                tokens.append(merged)
            symbols = [merged, *symbols[2:]]
    tokens = list(dict.fromkeys(tokens))
    # The end-of-text token has the highest id: CLIP's text model pools at argmax(input_ids).
    tokens += [BOS, EOS]
    return {token: index for index, token in enumerate(tokens)}, merges


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _added_token(content: str) -> dict:
    return {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}


def write_tokenizer(folder: Path, pad_token: str = EOS) -> int:
    """Write vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json; return the vocab size."""
    vocab, merges = clip_bpe()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    special = {
        "bos_token": _added_token(BOS),
        "eos_token": _added_token(EOS),
        "pad_token": pad_token,
        "unk_token": _added_token(EOS),
    }
    write_json(folder / "special_tokens_map.json", special)
    config = {
        "add_prefix_space": False,
        "do_lower_case": True,
        "errors": "replace",
        "model_max_length": 77,
        "tokenizer_class": "CLIPTokenizer",
        **{
            key: ({"__type": "AddedToken", **value} if isinstance(value, dict) else value)
            for key, value in special.items()
        },
    }
    write_json(folder / "tokenizer_config.json", config)
    return len(vocab)


def randomize_zero_init(model, seed: int, salt: int) -> None:
    """Give zero-initialised layers (ControlNet zero convolutions) random values, as trained weights have."""
    seeded(seed, salt)
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.normal_(0.0, 0.5)


def save_fp16_variant(model, folder: Path) -> None:
    """Save a diffusers or transformers model as the real repos' ``fp16`` variant (config + fp16 weights)."""
    model.to(torch.float16).save_pretrained(folder, variant="fp16", safe_serialization=True)


def rename_keys(weights_file: Path, rename) -> None:
    """Rewrite a safetensors file with ``rename(key)`` keys: the released files predate transformers 5's
    flattened CLIP modules, so they carry the older key names, which transformers 5 still maps on load."""
    from safetensors.torch import load_file

    tensors = load_file(weights_file)
    save_file(
        {rename(key): value for key, value in tensors.items()}, str(weights_file), metadata={"format": "pt"}
    )


def seeded(seed: int, salt: int) -> None:
    torch.manual_seed(seed * 1000 + salt)


def write_text_encoder(
    folder: Path, config: dict, vocab_size: int, seed: int, salt: int, cls_name: str
) -> None:
    import transformers

    seeded(seed, salt)
    config_cls = transformers.CLIPTextConfig
    model = getattr(transformers, cls_name)(config_cls(**{**config, "vocab_size": vocab_size}))
    save_fp16_variant(model, folder)
    if cls_name == "CLIPTextModel":
        rename_keys(
            folder / "model.fp16.safetensors",
            lambda key: key if key.startswith("text_model.") else f"text_model.{key}",
        )


def write_image_encoder(root: Path, seed: int) -> None:
    """The IP-Adapter CLIP vision tower (ViT-H in the real repo), stored in fp32 as h94 stores it."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    seeded(seed, 50)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**IMAGE_ENCODER_CONFIG))
    model.save_pretrained(root / IMAGE_ENCODER, safe_serialization=True)


def write_safety_checker(root: Path, seed: int) -> None:
    """The CompVis safety checker (CLIP ViT-L in the real repo) and its feature extractor config."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig

    seeded(seed, 60)
    config = CLIPConfig(
        text_config={**TEXT_ENCODER_CONFIG, "vocab_size": 600},
        vision_config={**TINY_VISION, "hidden_act": "quick_gelu"},
        projection_dim=16,
    )
    checker = StableDiffusionSafetyChecker(config)
    with torch.no_grad():
        checker.concept_embeds.normal_()
        checker.special_care_embeds.normal_()
        # Thresholds above any cosine similarity: the tiny checker never flags unless a test lowers them.
        checker.concept_embeds_weights.fill_(2.0)
        checker.special_care_embeds_weights.fill_(2.0)
    save_fp16_variant(checker, root / BASE / "safety_checker")
    rename_keys(
        root / BASE / "safety_checker" / "model.fp16.safetensors",
        lambda key: f"vision_model.{key}" if key.startswith("vision_model.") else key,
    )
    write_json(root / BASE / "feature_extractor" / "preprocessor_config.json", FEATURE_EXTRACTOR_CONFIG)


def ip_adapter_tensors(
    unet, image_embed_dim: int, seed: int, salt: int
) -> dict[str, dict[str, torch.Tensor]]:
    """IP-Adapter (plain, 4 tokens) tensors for ``unet``, numbered as h94's files number them.

    The file numbers every attention processor of the UNet in its module order (1, 3, 5, ...: the odd ids
    are the cross-attentions) and stores ``to_k_ip``/``to_v_ip`` for each cross-attention.
    """
    seeded(seed, salt)
    cross = unet.config.cross_attention_dim
    image_proj = {
        "proj.weight": torch.randn(4 * cross, image_embed_dim) * 0.1,
        "proj.bias": torch.randn(4 * cross) * 0.1,
        "norm.weight": torch.ones(cross),
        "norm.bias": torch.zeros(cross),
    }
    ip_adapter = {}
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        hidden = _hidden_size(unet, name)
        ip_adapter[f"{key_id}.to_k_ip.weight"] = torch.randn(hidden, cross) * 0.2
        ip_adapter[f"{key_id}.to_v_ip.weight"] = torch.randn(hidden, cross) * 0.2
        key_id += 2
    half = {
        group: {key: value.to(torch.float16) for key, value in tensors.items()}
        for group, tensors in {"image_proj": image_proj, "ip_adapter": ip_adapter}.items()
    }
    return half


def _hidden_size(unet, processor_name: str) -> int:
    channels = unet.config.block_out_channels
    if processor_name.startswith("mid_block"):
        return channels[-1]
    index = int(processor_name.split(".")[1])
    return list(reversed(channels))[index] if processor_name.startswith("up_blocks") else channels[index]


def write_ip_adapter(
    folder: Path, stem: str, tensors: dict[str, dict[str, torch.Tensor]], *, with_bin: bool = True
) -> None:
    """The formats h94 publishes: ``.safetensors`` (flat, prefixed keys) and ``.bin`` (nested dict)."""
    folder.mkdir(parents=True, exist_ok=True)
    if with_bin:
        torch.save(tensors, folder / f"{stem}.bin")
    flat = {
        f"{group}.{key}": value.contiguous() for group, part in tensors.items() for key, value in part.items()
    }
    save_file(flat, str(folder / f"{stem}.safetensors"), metadata={"format": "pt"})


def write(root: Path, seed: int) -> None:
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

    base = root / BASE
    write_json(base / "model_index.json", MODEL_INDEX)
    write_json(base / "scheduler" / "scheduler_config.json", SCHEDULER_CONFIG)
    vocab_size = write_tokenizer(base / "tokenizer")
    write_text_encoder(base / "text_encoder", TEXT_ENCODER_CONFIG, vocab_size, seed, 1, "CLIPTextModel")

    seeded(seed, 2)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    seeded(seed, 3)
    vae = AutoencoderKL(**VAE_CONFIG)
    for salt, folder in ((4, CANNY), (5, TILE)):
        seeded(seed, salt)
        controlnet = ControlNetModel(**controlnet_config(UNET_CONFIG, [8, 8, 16, 16]))
        randomize_zero_init(controlnet, seed, salt + 100)
        save_fp16_variant(controlnet, root / folder)

    write_ip_adapter(
        root / IP_ADAPTER_ROOT / "models",
        "ip-adapter_sd15",
        ip_adapter_tensors(unet, IMAGE_ENCODER_CONFIG["projection_dim"], seed, 6),
    )
    write_models(root, base, unet, vae, LCM_LORA, seed, salt=7)


def write_models(root: Path, base: Path, unet, vae, lcm_lora: str, seed: int, salt: int) -> None:
    """What both families write once their adapters are written: the UNet's LCM-LoRA (at ``lcm_lora``),
    the UNet, the VAE, and the image encoder and safety checker they share."""
    write_lcm_lora(root / lcm_lora, unet, seed * 1000 + salt)
    save_fp16_variant(unet, base / "unet")
    save_fp16_variant(vae, base / "vae")
    write_image_encoder(root, seed)
    write_safety_checker(root, seed)


# Single-file (original LDM layout) checkpoint of the tiny base model, for tests of custom checkpoints.

_RESNET_TO_LDM = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTENTION_TO_LDM = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _unet_key_to_ldm(key: str, unet_config: dict) -> str:
    parts = key.split(".")
    head, rest = parts[0], parts[1:]
    direct = {
        "time_embedding": {"linear_1": "time_embed.0", "linear_2": "time_embed.2"},
        "add_embedding": {"linear_1": "label_emb.0.0", "linear_2": "label_emb.0.2"},
        "conv_in": "input_blocks.0.0",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
    }
    if head in ("time_embedding", "add_embedding"):
        return ".".join([direct[head][rest[0]], *rest[1:]])
    if head in direct:
        return ".".join([direct[head], *rest])
    per_block = unet_config["layers_per_block"] + 1
    if head == "down_blocks":
        block, kind = int(rest[0]), rest[1]
        if kind == "downsamplers":
            return ".".join([f"input_blocks.{per_block * (block + 1)}.0.op", *rest[4:]])
        index = per_block * block + int(rest[2]) + 1
        return _block_key(f"input_blocks.{index}", kind, rest[3:])
    if head == "mid_block":
        kind, index = rest[0], int(rest[1])
        position = 1 if kind == "attentions" else 2 * index
        return _block_key(f"middle_block.{position}", kind, rest[2:], attention_slot=False)
    block, kind = int(rest[0]), rest[1]
    has_attention = unet_config["up_block_types"][block].startswith("CrossAttn")
    if kind == "upsamplers":
        return ".".join(
            [f"output_blocks.{per_block * block + per_block - 1}.{2 if has_attention else 1}", *rest[3:]]
        )
    return _block_key(f"output_blocks.{per_block * block + int(rest[2])}", kind, rest[3:])


def _block_key(prefix: str, kind: str, inner: list[str], attention_slot: bool = True) -> str:
    if kind == "attentions":
        return ".".join([prefix + (".1" if attention_slot else ""), *inner])
    name = _RESNET_TO_LDM[inner[0]]
    return ".".join([prefix + (".0" if attention_slot else ""), name, *inner[1:]])


def _vae_key_to_ldm(key: str, num_blocks: int) -> str:
    side, *rest = key.split(".")
    if rest[0] in ("conv_in", "conv_out") or side in ("quant_conv", "post_quant_conv"):
        return key
    if rest[0] == "conv_norm_out":
        return ".".join([side, "norm_out", *rest[1:]])
    if rest[0] == "mid_block":
        if rest[1] == "attentions":
            inner = ".".join(rest[3:])
            for name, ldm in _VAE_ATTENTION_TO_LDM.items():
                if inner.startswith(name + "."):
                    inner = ldm + inner[len(name) :]
            return f"{side}.mid.attn_1.{inner}"
        return ".".join([side, f"mid.block_{int(rest[2]) + 1}", *_vae_resnet(rest[3:])])
    block = int(rest[1])
    level, sampler = (block, "downsample") if side == "encoder" else (num_blocks - 1 - block, "upsample")
    stage = "down" if side == "encoder" else "up"
    if rest[2] in ("downsamplers", "upsamplers"):
        return ".".join([side, f"{stage}.{level}.{sampler}", *rest[4:]])
    return ".".join([side, f"{stage}.{level}.block.{rest[3]}", *_vae_resnet(rest[4:])])


def _vae_resnet(inner: list[str]) -> list[str]:
    return ["nin_shortcut" if inner[0] == "conv_shortcut" else inner[0], *inner[1:]]


def ldm_base_tensors(base: Path) -> dict[str, torch.Tensor]:
    """The UNet and VAE of the diffusers folder ``base`` under their original-layout (LDM) key names."""
    from safetensors.torch import load_file

    unet_config = json.loads((base / "unet" / "config.json").read_text())
    vae_config = json.loads((base / "vae" / "config.json").read_text())
    tensors = {}
    for key, value in load_file(base / "unet" / "diffusion_pytorch_model.fp16.safetensors").items():
        tensors["model.diffusion_model." + _unet_key_to_ldm(key, unet_config)] = value
    blocks = len(vae_config["block_out_channels"])
    for key, value in load_file(base / "vae" / "diffusion_pytorch_model.fp16.safetensors").items():
        ldm = _vae_key_to_ldm(key, blocks)
        if ".mid.attn_1." in ldm and ldm.endswith("weight") and value.ndim == 2:
            value = value[:, :, None, None]  # the original VAE attention uses 1x1 convolutions
        tensors["first_stage_model." + ldm] = value
    return tensors


def save_single_file(tensors: dict[str, torch.Tensor], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def write_single_file(root: Path, path: Path) -> Path:
    """Write the tiny SD1.5 base (UNet, VAE, text encoder) as one original-layout ``.safetensors`` file."""
    from safetensors.torch import load_file

    base = root / BASE
    tensors = ldm_base_tensors(base)
    for key, value in load_file(base / "text_encoder" / "model.fp16.safetensors").items():
        tensors["cond_stage_model.transformer." + key] = value
    return save_single_file(tensors, path)
