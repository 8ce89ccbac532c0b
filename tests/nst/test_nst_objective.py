"""The Gatys objective restated from the paper's definitions, independently of ``predictors.nst``.

Everything here is plain tensor arithmetic on the tiny VGG19 state_dict: layers are addressed by their index
in torchvision's ``vgg19().features`` (configuration "E" of torchvision/models/vgg.py: 64, 64, M, 128, 128,
M, 256 x4, M, 512 x4, M, 512 x4, M; a ReLU follows every convolution), written out as literals. The code under
test must agree term by term and in its gradient, so a moved layer, a lost style layer, another Gram
normalisation or a flipped sign fails here even though the code's own constants would agree with themselves.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from predictors.nst.objective import CONTENT_LAYER, STYLE_LAYERS, STYLE_WEIGHT, Objective, style_targets
from predictors.nst.optimize import Optimization
from predictors.nst.predict import Predictor
from predictors.nst.vgg import VGGFeatures
from tests.nst_jobs import make_job
from tools.cog_runtime import input_defaults
from tools.tiny_weights.vgg19 import tiny_vgg19_state_dict

# torchvision's vgg19().features: the 16 convolutions and the 5 max poolings; every other index is a ReLU.
CONVOLUTIONS = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
POOLS = (4, 9, 18, 27, 36)
# Gatys et al.: content at conv4_2 (features.21; its in-place ReLU features.22 overwrites it, so what the
# reference implementations read is the ReLU output); style at the first ReLU of every block.
CONTENT_INDEX = 22
STYLE_INDICES = (1, 6, 11, 20, 29)
# torchvision's ImageNet normalisation.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def plain_features(state: dict[str, torch.Tensor], image: torch.Tensor) -> dict[int, torch.Tensor]:
    """Every activation of features[0..29], by index, computed in float64 with functional ops."""
    mean = torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    x = (image.double() - mean) / std
    activations = {}
    for index in range(max(STYLE_INDICES) + 1):
        if index in CONVOLUTIONS:
            weight = state[f"features.{index}.weight"].double()
            x = F.conv2d(x, weight, state[f"features.{index}.bias"].double(), padding=1)
        elif index in POOLS:
            x = F.max_pool2d(x, 2)
        else:
            x = F.relu(x)
        activations[index] = x
    return activations


def plain_gram(features: torch.Tensor) -> torch.Tensor:
    """G = F F^T / (C H W) for F of shape (C, H*W)."""
    _, channels, height, width = features.shape
    flat = features.reshape(channels, height * width)
    return flat @ flat.T / (channels * height * width)


def relative_squared_error(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (value - target).pow(2).sum() / target.pow(2).sum()


def plain_tv(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of horizontal neighbours plus that of vertical neighbours."""
    horizontal = image[..., :, 1:] - image[..., :, :-1]
    vertical = image[..., 1:, :] - image[..., :-1, :]
    return horizontal.pow(2).mean() + vertical.pow(2).mean()


def plain_objective(state, image, content, style, weights):
    """(total, terms) of Gatys' objective: a content + b style + c TV, the style term averaged over the five
    layers with the layer weights normalised to sum to 1."""
    content_weight, style_weight, tv_weight, layer_weights = weights
    ours = plain_features(state, image)
    content_target = plain_features(state, content)[CONTENT_INDEX]
    style_features = plain_features(state, style)
    content_term = relative_squared_error(ours[CONTENT_INDEX], content_target)
    total_weight = sum(layer_weights)
    style_term = sum(
        weight
        / total_weight
        * relative_squared_error(plain_gram(ours[index]), plain_gram(style_features[index]))
        for weight, index in zip(layer_weights, STYLE_INDICES, strict=True)
    )
    tv_term = plain_tv(image.double())
    total = content_weight * content_term + style_weight * style_term + tv_weight * tv_term
    return total, {"content": content_term, "style": style_term, "tv": tv_term}


@pytest.fixture(scope="module")
def state():
    return tiny_vgg19_state_dict(seed=0)


@pytest.fixture(scope="module")
def vgg(state):
    # The feature extractor exactly as the predictor builds it.
    return VGGFeatures(state, (*STYLE_LAYERS, CONTENT_LAYER))


def _images(height=32, width=48):
    generator = torch.Generator().manual_seed(0)
    content, style, candidate = (torch.rand(1, 3, height, width, generator=generator) for _ in range(3))
    return content, style, candidate


def test_torchvision_indices_are_the_layers_the_code_names(vgg, state):
    content, _, _ = _images()
    features = vgg(content)
    plain = plain_features(state, content)
    assert CONTENT_LAYER == "relu4_2"
    torch.testing.assert_close(features[CONTENT_LAYER].double(), plain[CONTENT_INDEX], rtol=1e-4, atol=1e-6)
    assert len(STYLE_LAYERS) == 5
    for name, index in zip(STYLE_LAYERS, STYLE_INDICES, strict=True):
        torch.testing.assert_close(features[name].double(), plain[index], rtol=1e-4, atol=1e-6)


def test_style_targets_are_the_normalized_grams_of_the_five_style_layers(vgg, state):
    _, style, _ = _images()
    targets = style_targets(vgg, [style], [1.0], (48, 32), 1.0)
    plain = plain_features(state, style)
    assert len(targets) == 5
    for name, index in zip(STYLE_LAYERS, STYLE_INDICES, strict=True):
        torch.testing.assert_close(targets[name].double(), plain_gram(plain[index]), rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize(
    "weights",
    [
        (1.0, 10.0, 1.0, (1.0, 1.0, 1.0, 1.0, 1.0)),
        (2.0, 30.0, 5.0, (1.0, 2.0, 3.0, 4.0, 5.0)),
        (0.5, 3.0, 40.0, (0.0, 0.0, 1.0, 0.0, 3.0)),
    ],
    ids=["defaults", "weighted", "sparse-layers"],
)
def test_objective_terms_total_and_gradient_equal_the_papers(vgg, state, weights):
    content_weight, style_weight, tv_weight, layer_weights = weights
    content, style, candidate = _images()
    grams = style_targets(vgg, [style], [1.0], (48, 32), 1.0)
    objective = Objective(
        vgg,
        content,
        grams,
        content_weight=content_weight,
        style_weight=style_weight,
        tv_weight=tv_weight,
        layer_weights=layer_weights,
    )

    image = candidate.clone().requires_grad_(True)
    total, terms = objective(image)
    total.backward()
    terms = {name: value.detach() for name, value in terms.items()}
    reference = candidate.double().clone().requires_grad_(True)
    expected_total, expected_terms = plain_objective(state, reference, content, style, weights)
    expected_total.backward()

    for name in ("content", "style", "tv"):
        assert float(terms[name]) == pytest.approx(float(expected_terms[name].detach()), rel=1e-4), name
    assert float(total.detach()) == pytest.approx(float(expected_total.detach()), rel=1e-4)
    # All three terms are positive here, so a flipped sign or a dropped term moves the total.
    assert min(float(value.detach()) for value in expected_terms.values()) > 1e-3
    gradient, expected_gradient = image.grad.double(), reference.grad
    assert float((gradient - expected_gradient).norm() / expected_gradient.norm()) < 1e-3


def test_default_weights_are_the_documented_ones():
    inputs = input_defaults(Predictor)
    assert (inputs["content_weight"], inputs["style_strength"], inputs["tv_weight"]) == (1.0, 1.0, 1.0)
    # style_strength multiplies the style weight: 10 at the default strength.
    assert STYLE_WEIGHT == 10.0
    assert make_job().style_layer_weights == (1.0,) * 5


def test_one_lbfgs_iteration_is_a_step_along_minus_the_gradient(vgg, state):
    """L-BFGS' first step has no curvature yet: lr * min(1, 1/|g|_1) along -g (torch's LBFGS)."""
    content, style, candidate = _images(16, 16)
    weights = (1.0, 10.0, 1.0, (1.0,) * 5)
    grams = style_targets(vgg, [style], [1.0], (16, 16), 1.0)
    objective = Objective(vgg, content, grams, content_weight=1.0, style_weight=10.0, tv_weight=1.0)
    optimization = Optimization(objective, candidate, "lbfgs")
    optimization.step()
    reference = candidate.double().clone().requires_grad_(True)
    plain_objective(state, reference, content, style, weights)[0].backward()
    gradient = reference.grad
    expected = candidate.double() - min(1.0, 1.0 / float(gradient.abs().sum())) * gradient
    moved = optimization.image.detach().double()
    assert float((moved - expected).norm() / (expected - candidate).norm()) < 1e-3
