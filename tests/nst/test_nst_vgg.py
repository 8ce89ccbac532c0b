"""VGG19 loader: torchvision's checkpoint layout, truncation, normalisation, pooling and padding options."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional as F

from predictors.common.errors import WeightsError
from predictors.nst.vgg import (
    AVG_POOL_SCALE,
    EXPECTED_KEYS,
    FEATURES_LAYOUT,
    IMAGENET_MEAN,
    VGGFeatures,
    read_checkpoint,
)
from tools.tiny_weights.vgg19 import TINY_BLOCK_WIDTHS, tiny_vgg19_state_dict


def load(path, layers, **options):
    """The predictor's loading path: the checked state_dict, then the feature extractor."""
    return VGGFeatures(read_checkpoint(path), layers, **options)


@pytest.fixture(scope="module")
def state():
    return tiny_vgg19_state_dict(seed=0)


@pytest.fixture
def checkpoint(tmp_path, state):
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    torch.save(state, path)
    return path


def test_layout_matches_torchvision_reference(reference_dir):
    facts = json.loads((reference_dir / "nst" / "vgg19_torchvision.json").read_text())
    expected = [(int(row[0].split(".")[1]), row[1]) for row in facts["features_layout"]]
    assert list(FEATURES_LAYOUT) == expected
    assert list(IMAGENET_MEAN) == facts["preprocessing_torchvision"]["mean"]


def test_tiny_checkpoint_has_exactly_torchvision_keys(state):
    assert set(state) == set(EXPECTED_KEYS)
    assert len(EXPECTED_KEYS) == 38  # 16 convolutions + 3 linear layers, weight and bias each


def test_torchvision_layout_file_loads_with_widths_from_the_file(checkpoint):
    vgg = load(checkpoint, ["relu1_1", "relu3_1", "relu5_1"])
    features = vgg(torch.rand(1, 3, 64, 48))
    assert features["relu1_1"].shape == (1, TINY_BLOCK_WIDTHS[0], 64, 48)
    assert features["relu3_1"].shape == (1, TINY_BLOCK_WIDTHS[2], 16, 12)
    assert features["relu5_1"].shape == (1, TINY_BLOCK_WIDTHS[4], 4, 3)
    assert vgg.body[0].out_channels == TINY_BLOCK_WIDTHS[0]  # conv1_1


def test_only_builds_up_to_the_deepest_requested_layer(checkpoint):
    vgg = load(checkpoint, ["relu1_1"])
    assert vgg.names == ("conv1_1", "relu1_1")
    assert len(vgg.body) == 2


def test_missing_key_names_the_key_and_the_layout(tmp_path, state):
    broken = dict(state)
    del broken["features.21.weight"]
    path = tmp_path / "missing.pth"
    torch.save(broken, path)
    with pytest.raises(WeightsError, match=r"missing key 'features\.21\.weight'.*features\.\{0,2,5"):
        load(path, ["relu4_2"])


def test_renamed_key_names_both_sides(tmp_path, state):
    broken = {key.replace("features.0.", "features.conv1_1."): value for key, value in state.items()}
    path = tmp_path / "renamed.pth"
    torch.save(broken, path)
    with pytest.raises(WeightsError) as raised:
        load(path, ["relu1_1"])
    message = str(raised.value)
    assert "missing key 'features.0.weight' (and 1 more)" in message
    assert "unexpected key 'features.conv1_1.bias'" in message


def test_broken_channel_chain_is_refused(tmp_path, state):
    broken = dict(state)
    broken["features.2.weight"] = torch.zeros(4, 5, 3, 3)
    path = tmp_path / "shape.pth"
    torch.save(broken, path)
    with pytest.raises(WeightsError, match=r"features\.2\.weight has shape \(4, 5, 3, 3\)"):
        load(path, ["relu1_1"])


def test_not_a_checkpoint_is_a_weights_error(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="could not be read"):
        load(path, ["relu1_1"])


def test_imagenet_normalization_is_inside_the_module(checkpoint, state):
    vgg = load(checkpoint, ["conv1_1"])
    mean_image = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).expand(1, 3, 8, 8)
    # The mean colour normalises to zero, so the first convolution returns its bias alone.
    out = vgg(mean_image)["conv1_1"]
    assert torch.allclose(out, state["features.0.bias"].view(1, -1, 1, 1).expand_as(out), atol=1e-5)


def test_requested_conv_output_is_not_overwritten_by_its_relu(checkpoint):
    vgg = load(checkpoint, ["conv1_2", "relu1_2", "relu1_1"])
    features = vgg(torch.rand(1, 3, 16, 16))
    assert (features["conv1_2"] < 0).any()
    assert torch.equal(features["relu1_2"], features["conv1_2"].clamp_min(0))


def test_avg_pool_scale_matches_max_pool_under_its_model():
    # The derivation's model: units active with probability 1/2, one shared magnitude per 2x2 window.
    generator = torch.Generator().manual_seed(0)
    magnitude = (
        torch.rand(1, 8, 64, 64, generator=generator).repeat_interleave(2, -1).repeat_interleave(2, -2)
    )
    active = (torch.rand(1, 8, 128, 128, generator=generator) < 0.5).float()
    activations = magnitude * active
    scaled_avg = F.avg_pool2d(activations, 2).mean() * AVG_POOL_SCALE
    assert scaled_avg / F.max_pool2d(activations, 2).mean() == pytest.approx(1.0, abs=0.02)
    # Unscaled, average pooling would shrink activations by almost half at each pooling layer.
    assert F.avg_pool2d(activations, 2).mean() / F.max_pool2d(activations, 2).mean() < 0.6


def test_avg_pooling_layer_applies_the_scale(checkpoint):
    image = torch.rand(1, 3, 16, 16)
    avg = load(checkpoint, ["relu1_2", "pool1"], pooling="avg")(image)
    assert torch.allclose(avg["pool1"], F.avg_pool2d(avg["relu1_2"], 2) * AVG_POOL_SCALE)
    maximum = load(checkpoint, ["relu1_2", "pool1"], pooling="max")(image)
    assert torch.equal(maximum["pool1"], F.max_pool2d(maximum["relu1_2"], 2))


@pytest.mark.parametrize("padding", ["reflect", "replicate"])
def test_padding_changes_only_the_border(checkpoint, padding):
    image = torch.rand(1, 3, 12, 12)
    zeros = load(checkpoint, ["conv1_1"])(image)["conv1_1"]
    other = load(checkpoint, ["conv1_1"], padding=padding)(image)["conv1_1"]
    assert torch.allclose(zeros[..., 1:-1, 1:-1], other[..., 1:-1, 1:-1])
    assert not torch.allclose(zeros[..., 0, :], other[..., 0, :])


def test_unknown_layer_and_options_are_refused(checkpoint):
    with pytest.raises(ValueError, match="Unknown VGG19 layer"):
        load(checkpoint, ["relu6_1"])
    with pytest.raises(ValueError, match="pooling"):
        load(checkpoint, ["relu1_1"], pooling="l2")
    with pytest.raises(ValueError, match="padding"):
        load(checkpoint, ["relu1_1"], padding="circular")


def test_checkpointed_large_images_give_the_same_features_and_gradients(checkpoint):
    vgg = load(checkpoint, ["relu1_1", "relu3_1", "relu4_2", "relu5_1"])
    image = torch.rand(1, 3, 32, 32)

    def run():
        x = image.clone().requires_grad_(True)
        features = vgg(x)
        sum(f.pow(2).sum() for f in features.values()).backward()
        return features, x.grad

    plain_features, plain_grad = run()
    vgg.checkpoint_pixels = 0
    assert len(vgg._blocks) == 5
    checked_features, checked_grad = run()
    for name, value in plain_features.items():
        assert torch.allclose(checked_features[name], value)
    assert torch.allclose(checked_grad, plain_grad, rtol=1e-4, atol=1e-6)
