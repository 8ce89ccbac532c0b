"""MusePose networks: exact release key names/shapes (meta device), and the semantics the layout implies."""

from __future__ import annotations

import json
import math

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention

from predictors.musepose.models import (
    ReferenceBank,
    build_denoising_unet,
    build_pose_guider,
    build_reference_unet,
    install_reference_readers,
    install_reference_writers,
    reference_block_names,
)
from predictors.musepose.models.config import UNET_ADDITIONAL_KWARGS
from predictors.musepose.models.motion_module import sinusoidal_table
from predictors.musepose.models.pose_guider import BLOCK_OUT_CHANNELS, PoseGuider
from predictors.musepose.models.reference_attention import ReferenceReader
from tests import upstream
from tools.tiny_weights.musepose import UNET_CONFIG


@pytest.fixture(scope="module")
def reference_facts(reference_dir):
    folder = reference_dir / "musepose"

    def keys(name: str) -> dict[str, list[int]]:
        entries = json.loads((folder / f"keys_{name}.json").read_text())["keys"]
        return {key: entry["shape"] for key, entry in entries.items()}

    return {
        "unet_config": json.loads((folder / "sd-image-variations-unet-config.json").read_text()),
        "inference": json.loads((folder / "inference_config.json").read_text()),
        "pairing": json.loads((folder / "ref_attn_pairing.json").read_text())["pairs"],
        "keys": keys,
    }


@pytest.fixture(scope="module")
def full_size_models(reference_facts):
    """The real-size networks on the meta device: nothing is allocated."""
    config, inference = reference_facts["unet_config"], reference_facts["inference"]
    with torch.device("meta"):
        return {
            "denoising": build_denoising_unet(config, inference["unet_additional_kwargs"]),
            "reference": build_reference_unet(config),
            "pose_guider": build_pose_guider(config),
        }


def _shapes(tensors) -> dict[str, list[int]]:
    return {name: list(tensor.shape) for name, tensor in tensors}


def test_denoising_unet_keys_and_shapes_equal_the_release(full_size_models, reference_facts):
    expected = reference_facts["keys"]("denoising_unet")
    model = full_size_models["denoising"]
    persistent = _shapes(model.state_dict().items())
    # The 42 pe tables are recomputed, so they are non-persistent buffers with the release's names and shapes.
    tables = _shapes((name, buffer) for name, buffer in model.named_buffers() if name.endswith(".pe"))
    assert len(expected) == 1274 and len(tables) == 42
    assert persistent == {key: shape for key, shape in expected.items() if not key.endswith(".pe")}
    assert tables == {key: shape for key, shape in expected.items() if key.endswith(".pe")}


def test_motion_module_keys_are_the_release_file(full_size_models, reference_facts):
    expected = reference_facts["keys"]("motion_module")
    model = full_size_models["denoising"]
    ours = _shapes((k, v) for k, v in model.state_dict().items() if "motion_modules" in k)
    ours.update(_shapes((k, v) for k, v in model.named_buffers() if k.endswith(".pe")))
    assert len(expected) == 588
    assert ours == expected


def test_inference_settings_are_upstreams(reference_facts):
    inference = reference_facts["inference"]
    assert inference["unet_additional_kwargs"] == UNET_ADDITIONAL_KWARGS
    assert list(BLOCK_OUT_CHANNELS) == inference["pose_guider"]["block_out_channels"] == [16, 32, 96, 256]


def test_reference_unet_and_pose_guider_keys_equal_the_release(full_size_models, reference_facts):
    assert _shapes(full_size_models["reference"].state_dict().items()) == reference_facts["keys"](
        "reference_unet"
    )
    assert _shapes(full_size_models["pose_guider"].state_dict().items()) == reference_facts["keys"](
        "pose_guider"
    )


def test_reference_blocks_pair_like_upstream(full_size_models, reference_facts):
    pairs = reference_facts["pairing"]
    writers = reference_block_names(full_size_models["reference"])
    readers = reference_block_names(full_size_models["denoising"])
    # Upstream sorts both lists by -width (stable) and zips them; the writer order is the reference one.
    assert writers == [pair["writer(reference_unet)"] for pair in pairs]
    assert sorted(readers) == sorted(pair["reader(denoising_unet)"] for pair in pairs)
    assert all(pair["writer(reference_unet)"] == pair["reader(denoising_unet)"] for pair in pairs)


def test_position_table_is_the_sinusoid():
    table = sinusoidal_table(128, 8)
    assert table.shape == (1, 128, 8)
    position, pair = 5, 1
    frequency = math.exp(-2 * pair * math.log(10000.0) / 8)
    assert table[0, position, 2 * pair].item() == pytest.approx(math.sin(position * frequency), abs=1e-6)
    assert table[0, position, 2 * pair + 1].item() == pytest.approx(math.cos(position * frequency), abs=1e-6)


@pytest.fixture(scope="module")
def tiny_unets():
    torch.manual_seed(0)
    denoising = build_denoising_unet(UNET_CONFIG, UNET_ADDITIONAL_KWARGS).eval()
    stock = UNet2DConditionModel.from_config(UNET_CONFIG).eval()
    spatial = {k: v for k, v in denoising.state_dict().items() if "motion_modules" not in k}
    stock.load_state_dict(spatial, strict=True)
    return denoising, stock


def _inputs(batch, frames, height, width, seed=1):
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 4, frames, height, width, generator=generator)
    context = torch.randn(batch, 1, UNET_CONFIG["cross_attention_dim"], generator=generator)
    pose = torch.randn(
        batch, UNET_CONFIG["block_out_channels"][0], frames, height, width, generator=generator
    )
    return sample, context, pose


@pytest.mark.parametrize("size", [(8, 8), (8, 12)])
def test_spatial_layers_are_the_2d_unet_frame_by_frame(tiny_unets, size):
    """With the motion modules' output projections zeroed each module is the identity, and the UNet3D must
    then be exactly diffusers' UNet2D on every frame (pose features added after conv_in), odd sizes too."""
    denoising, stock = tiny_unets
    saved = {}
    for name, module in denoising.named_modules():
        if name.endswith("temporal_transformer"):
            saved[name] = (module.proj_out.weight.clone(), module.proj_out.bias.clone())
            module.proj_out.weight.data.zero_()
            module.proj_out.bias.data.zero_()
    try:
        sample, context, pose = _inputs(2, 3, *size)
        upstream.assert_frames_equal_stock_unet(denoising, stock, sample, context, pose)
    finally:
        modules = dict(denoising.named_modules())
        for name, (weight, bias) in saved.items():
            modules[name].proj_out.weight.data.copy_(weight)
            modules[name].proj_out.bias.data.copy_(bias)


def test_motion_modules_mix_frames_but_never_batch_entries(tiny_unets):
    denoising, _ = tiny_unets
    sample, context, pose = _inputs(2, 3, 8, 8)
    changed = sample.clone()
    changed[0, :, 2] += 1.0
    with torch.no_grad():
        before, after = denoising(sample, 10, context, pose), denoising(changed, 10, context, pose)
    assert (after[0, :, 0] - before[0, :, 0]).abs().max() > 1e-4  # frame 2 reaches frame 0 through time
    torch.testing.assert_close(after[1], before[1], atol=1e-6, rtol=0)  # batch entry 1 is untouched


def test_feed_forward_chunking_changes_nothing(tiny_unets, monkeypatch):
    denoising, _ = tiny_unets
    monkeypatch.setattr("predictors.musepose.models.unet3d.TEMPORAL_FEED_FORWARD_ROWS", 5)
    sample, context, pose = _inputs(2, 3, 8, 8)
    with torch.no_grad():
        plain = denoising(sample, 10, context, pose)
        denoising.enable_feed_forward_chunking()
        try:
            chunked = denoising(sample, 10, context, pose)
        finally:
            denoising.enable_feed_forward_chunking(False)
    torch.testing.assert_close(chunked, plain, atol=1e-5, rtol=1e-5)


def test_reader_attends_over_reference_only_on_the_conditional_half():
    torch.manual_seed(3)
    attention = Attention(query_dim=16, heads=2, dim_head=8).eval()
    bank = ReferenceBank()
    reader = ReferenceReader(bank, "block")
    tokens = torch.randn(4, 5, 16)  # rows: 2 uncond frames, then 2 cond frames
    reference = torch.randn(1, 3, 16)
    bank.load({"block": reference}, first_half_unconditional=True)
    assert bank.features["block"].dtype == torch.float16  # upstream rounds the stored features to fp16

    def explicit(query_rows, key_rows):
        q, k, v = attention.to_q(query_rows), attention.to_k(key_rows), attention.to_v(key_rows)
        split = lambda t: t.view(t.shape[0], t.shape[1], 2, 8).transpose(1, 2)  # noqa: E731
        weights = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(8), dim=-1)
        merged = (weights @ split(v)).transpose(1, 2).reshape(q.shape[0], q.shape[1], 16)
        return attention.to_out[0](merged)

    with torch.no_grad():
        out = reader(attention, tokens)
        rounded = bank.features["block"].float().expand(2, -1, -1)
        torch.testing.assert_close(out[:2], explicit(tokens[:2], tokens[:2]), atol=1e-5, rtol=1e-5)
        with_reference = explicit(tokens[2:], torch.cat([tokens[2:], rounded], dim=1))
        torch.testing.assert_close(out[2:], with_reference, atol=1e-5, rtol=1e-5)
        bank.load({"block": reference}, first_half_unconditional=False)
        all_rows = reader(attention, tokens)
        torch.testing.assert_close(
            all_rows[:2], explicit(tokens[:2], torch.cat([tokens[:2], rounded[:2]], 1))
        )
        bank.clear()
        torch.testing.assert_close(reader(attention, tokens), explicit(tokens, tokens), atol=1e-5, rtol=1e-5)


def test_writers_record_each_blocks_norm1_output(tiny_unets):
    reference = build_reference_unet(UNET_CONFIG).eval()
    recorded = install_reference_writers(reference)
    latents = torch.randn(1, 4, 8, 8)
    context = torch.randn(1, 1, UNET_CONFIG["cross_attention_dim"])
    captured = {}
    block_name = "down_blocks.0.attentions.0.transformer_blocks.0"
    block = dict(reference.named_modules())[block_name]
    hook = block.norm1.register_forward_hook(lambda m, i, o: captured.setdefault("norm1", o.clone()))
    with torch.no_grad():
        reference(latents, 0, encoder_hidden_states=context)
    hook.remove()
    assert len(recorded) == 16
    assert recorded[block_name].shape == (1, 64, 32)
    torch.testing.assert_close(recorded[block_name], captured["norm1"], atol=0, rtol=0)
    denoising, _ = tiny_unets
    assert sorted(install_reference_readers(denoising, ReferenceBank())) == sorted(recorded)


def test_the_conditional_row_alone_records_what_upstreams_pair_records():
    """Upstream runs the ReferenceNet on [uncond, cond] and its reader uses only the cond row's features."""
    torch.manual_seed(5)
    reference = build_reference_unet(UNET_CONFIG).eval()
    recorded = install_reference_writers(reference)
    latents = torch.randn(1, 4, 8, 8)
    clip = torch.randn(1, 1, UNET_CONFIG["cross_attention_dim"])
    with torch.no_grad():
        reference(
            latents.repeat(2, 1, 1, 1), 0, encoder_hidden_states=torch.cat([torch.zeros_like(clip), clip])
        )
        pair = dict(recorded)
        reference(latents, 0, encoder_hidden_states=clip)
    for name, features in recorded.items():
        torch.testing.assert_close(features[0], pair[name][1], atol=1e-5, rtol=1e-5)
    assert any((pair[name][0] - pair[name][1]).abs().max() > 1e-3 for name in pair)  # the rows do differ


def test_pose_guider_reaches_one_eighth_and_the_unet_width():
    guider = PoseGuider(32)
    assert guider(torch.rand(2, 3, 64, 48)).shape == (2, 32, 8, 6)
    assert len([m for m in guider.modules() if isinstance(m, torch.nn.Conv2d)]) == 8
