"""The nst job: its one check(), the precision choice (bf16 VGG pass, fp32 Gram and losses) and run()."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from predictors.common.errors import InputError
from predictors.nst import objective, transfer
from predictors.nst.objective import (
    PRECISION_ENV,
    Objective,
    autocast_dtype,
    gram_matrix,
    style_targets,
)
from predictors.nst.optimize import Final, Preview, _Colors, _scale_objective, build_schedule
from tests.nst_jobs import make_job
from tools.tiny_weights.vgg19 import tiny_vgg19_state_dict

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def vgg():
    """The tiny VGG19 as the job builds it (its state: ``tiny_vgg19_state_dict(seed=0)``)."""
    return transfer.StyleTransfer(tiny_vgg19_state_dict(seed=0), None, CPU).features("max", "zeros")


@pytest.mark.parametrize(
    ("changes", "styles", "message"),
    [
        ({}, 0, "Give one to 3 style images, not 0."),
        ({"style_weights": (1.0, 1.0, 1.0, 1.0)}, 4, "Give one to 3 style images, not 4."),
        ({"style_weights": (1.0,)}, 2, "style_weights has 1 value(s) but 2 style image(s) were given."),
        (
            {"style_weights": (1.0, -1.0)},
            2,
            "style_weights must be non-negative and not all zero, got [1.0, -1.0].",
        ),
        (
            {"style_weights": (0.0, 0.0)},
            2,
            "style_weights must be non-negative and not all zero, got [0.0, 0.0].",
        ),
        (
            {"style_weights": (float("nan"),)},
            1,
            "style_weights must be non-negative and not all zero, got [nan].",
        ),
        ({"optimizer": "sgd"}, 1, "optimizer must be one of lbfgs, adam, got 'sgd'."),
        ({"init": "image"}, 1, "init must be one of content, noise, style, fast, got 'image'."),
        ({"color_preservation": "sepia"}, 1, "color_preservation must be one of none, luminance, histogram"),
        ({"quality": "ultra"}, 1, "quality must be one of draft, standard, high, got 'ultra'."),
        ({"pooling": "l2"}, 1, "pooling must be one of max, avg, got 'l2'."),
        ({"padding": "circular"}, 1, "padding must be one of zeros, reflect, replicate, got 'circular'."),
        ({"precision": "fp16"}, 1, "precision must be one of auto, fp32, bf16, got 'fp16'."),
        ({"tv_weight": -1.0}, 1, "tv_weight must be 0 or more, got -1.0."),
        ({"iterations": -1}, 1, "iterations must be 0 or more, got -1."),
        ({"style_scale": 0.0}, 1, "style_scale must be more than 0, got 0.0."),
        ({"style_layer_weights": (1.0,)}, 1, "style_layer_weights needs 5 values"),
    ],
    ids=lambda value: str(value)[:40],
)
def test_check_refuses_each_broken_rule_with_one_sentence(changes, styles, message):
    with pytest.raises(InputError) as raised:
        transfer.check(make_job(**changes), styles)
    assert str(raised.value).startswith(message)


def test_check_accepts_the_defaults_and_zero_weights_for_some_styles():
    transfer.check(make_job(), 1)
    transfer.check(make_job(style_weights=(1.0, 0.0, 2.0)), 3)


def test_quality_presets_and_the_iterations_override():
    assert [make_job(quality=q).coarse_iterations for q in ("draft", "standard", "high")] == [100, 300, 600]
    assert make_job(quality="high", iterations=7).coarse_iterations == 7


@pytest.fixture
def native_bf16(monkeypatch):
    """Pretend the CPU has (True) or lacks (False) native bf16 kernels."""

    def set_native(value: bool) -> None:
        monkeypatch.setattr(objective, "cpu_has_bf16", lambda: value)

    monkeypatch.delenv(PRECISION_ENV, raising=False)
    return set_native


def test_auto_is_bf16_only_on_a_cpu_with_native_bf16(native_bf16):
    native_bf16(True)
    assert autocast_dtype("auto", CPU) == torch.bfloat16
    native_bf16(False)
    assert autocast_dtype("auto", CPU) == torch.float32


def test_fp32_input_and_environment_force_bf16_off(native_bf16, monkeypatch):
    native_bf16(True)
    assert autocast_dtype("fp32", CPU) == torch.float32
    monkeypatch.setenv(PRECISION_ENV, "fp32")
    assert autocast_dtype("auto", CPU) == torch.float32
    # An explicit input wins over the operator's default for "auto".
    assert autocast_dtype("bf16", CPU) == torch.bfloat16
    monkeypatch.setenv(PRECISION_ENV, "bf16")
    assert autocast_dtype("fp32", CPU) == torch.float32
    monkeypatch.setenv(PRECISION_ENV, "fast")
    with pytest.raises(ValueError, match="TRIPTYCH_NST_PRECISION='fast' is not a precision"):
        autocast_dtype("auto", CPU)


def test_bf16_on_a_cpu_without_native_bf16_is_an_input_error(native_bf16, monkeypatch):
    native_bf16(False)
    with pytest.raises(InputError, match="precision bf16 needs a CPU with native bf16"):
        autocast_dtype("bf16", CPU)
    monkeypatch.setenv(PRECISION_ENV, "bf16")
    with pytest.raises(InputError, match="precision bf16 needs a CPU with native bf16"):
        autocast_dtype("auto", CPU)


@pytest.mark.parametrize(("bf16_supported", "expected"), [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_on_cuda_is_bf16_else_fp16(native_bf16, monkeypatch, bf16_supported, expected):
    native_bf16(False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16_supported)
    cuda = torch.device("cuda")
    assert autocast_dtype("auto", cuda) == expected
    assert autocast_dtype("fp32", cuda) == torch.float32


def test_under_bf16_the_vgg_pass_is_bf16_and_gram_targets_and_losses_fp32(vgg):
    generator = torch.Generator().manual_seed(0)
    content, style, image = (torch.rand(1, 3, 32, 32, generator=generator) for _ in range(3))
    seen = []
    hook = vgg.body[0].register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    try:
        grams = style_targets(vgg, [style], [1.0], (32, 32), 1.0, torch.bfloat16)
        bf16 = Objective(
            vgg, content, grams, content_weight=1.0, style_weight=10.0, tv_weight=1.0, dtype=torch.bfloat16
        )
        image.requires_grad_(True)
        total, terms = bf16(image)
        total.backward()
    finally:
        hook.remove()
    assert seen and set(seen) == {torch.bfloat16}
    assert {gram.dtype for gram in grams.values()} == {torch.float32}
    assert bf16.content_target.dtype == torch.float32
    assert total.dtype == torch.float32 and {t.dtype for t in terms.values()} == {torch.float32}
    assert image.grad.dtype == torch.float32
    assert gram_matrix(torch.rand(1, 4, 3, 3, dtype=torch.bfloat16)).dtype == torch.float32
    # bf16 features, fp32 arithmetic on them: the total stays close to the fp32 objective's.
    fp32_grams = style_targets(vgg, [style], [1.0], (32, 32), 1.0)
    fp32 = Objective(vgg, content, fp32_grams, content_weight=1.0, style_weight=10.0, tv_weight=1.0)
    assert float(total.detach()) == pytest.approx(float(fp32(image.detach())[0]), rel=0.05)


def test_each_scale_objective_takes_the_jobs_weights(vgg):
    job = make_job(style_strength=0.5, content_weight=3.0, tv_weight=7.0)
    content = torch.rand(1, 3, 32, 32)
    colors = _Colors("none", content, [content])
    (scale,) = build_schedule(32, 32, 1)
    built = _scale_objective(vgg, job, colors, scale, torch.float32)
    # style_strength multiplies the style weight of 10.
    assert built.weights == (3.0, 5.0, 7.0)
    assert built.size == (32, 32)


class _Fast:
    """The fast start's interface, recording its calls: a grey image at the content's size."""

    def __init__(self):
        self.calls = []

    def stylize(self, content, styles, style_weights, size=None, color_preservation="none"):
        self.calls.append((content.size, [s.size for s in styles], style_weights, color_preservation))
        return Image.new("RGB", content.size, (90, 90, 90))


def test_run_with_fast_init_and_no_iterations_needs_no_vgg():
    fast = _Fast()
    job_transfer = transfer.StyleTransfer(None, fast, CPU)
    content, style = Image.new("RGB", (64, 48), (200, 10, 10)), Image.new("RGB", (640, 480))
    events = list(job_transfer.run(make_job(init="fast", iterations=0), content, [style]))
    assert [type(e) for e in events] == [Final] and events[0].image.size == (64, 48)
    # The style reaches the fast start shrunk once to the size the optimization would use.
    assert fast.calls == [((64, 48), [(64, 48)], (1.0,), "none")]


def test_run_streams_the_fast_preview_then_optimizes_in_the_chosen_precision(native_bf16):
    native_bf16(True)
    job_transfer = transfer.StyleTransfer(tiny_vgg19_state_dict(seed=0), _Fast(), CPU)
    content = Image.new("RGB", (32, 32), (200, 120, 10))
    style = Image.effect_noise((48, 48), 60).convert("RGB")
    job = make_job(init="fast", iterations=2, preview_every=1)
    seen = []
    hook = (
        job_transfer.features("max", "zeros")
        .body[0]
        .register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    )
    try:
        events = list(job_transfer.run(job, content, [style]))
    finally:
        hook.remove()
    assert [type(e) for e in events] == [Preview, Preview, Final]
    assert events[0].step is None and events[1].step.iteration == 1
    assert all(isinstance(e.image, Image.Image) and e.image.size == (32, 32) for e in events)
    assert set(seen) == {torch.bfloat16}


def test_a_small_style_is_not_enlarged_before_the_scales_resize_it():
    small = Image.new("RGB", (20, 10))
    assert transfer._shrink_to_use(small, (64, 64), 1.0) is small
    assert transfer._shrink_to_use(Image.new("RGB", (400, 200)), (64, 64), 0.5).size == (32, 16)
