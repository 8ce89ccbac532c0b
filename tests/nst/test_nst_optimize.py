"""The Gatys objective and its optimizer loop, on a tiny VGG19 in torchvision's layout."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from PIL import Image

from predictors.common import runtime
from predictors.nst.objective import (
    CONTENT_LAYER,
    STYLE_LAYERS,
    Objective,
    blend_grams,
    gram_matrix,
    style_targets,
    tv_loss,
)
from predictors.nst.objective import resize_tensor as resize
from predictors.nst.optimize import (
    Final,
    Optimization,
    Preview,
    build_schedule,
    iterate,
    lbfgs_history,
    to_tensor,
)
from predictors.nst.vgg import VGGFeatures
from tests.conftest import REPO_ROOT
from tests.nst_jobs import make_job, run_to_end
from tests.replicate_progress import progress_lines
from tools.tiny_weights.vgg19 import tiny_vgg19_state_dict

DEFAULT_WEIGHTS = {"content_weight": 1.0, "style_weight": 10.0, "tv_weight": 1.0}


def load(name: str, size: int) -> torch.Tensor:
    image = Image.open(REPO_ROOT / "examples" / name).convert("RGB")
    return to_tensor(image.resize((size, size), Image.LANCZOS))


@pytest.fixture(scope="module")
def vgg():
    return VGGFeatures(tiny_vgg19_state_dict(seed=0), (*STYLE_LAYERS, CONTENT_LAYER))


@pytest.fixture(scope="module")
def content():
    return load("content.jpg", 256)


@pytest.fixture(scope="module")
def style():
    return load("style.png", 256)


def terms_at(vgg, content, style, size):
    """Loss terms of the style image judged against (content, style) with everything resized to ``size``."""
    grams = style_targets(vgg, [resize(style, size, size)], [1.0], (size, size), 1.0)
    objective = Objective(vgg, resize(content, size, size), grams, **DEFAULT_WEIGHTS)
    # A fixed candidate: half content, half style.
    candidate = 0.5 * resize(content, size, size) + 0.5 * resize(style, size, size)
    _, terms = objective(candidate)
    return {name: float(value) for name, value in terms.items()}


def test_loss_terms_and_style_targets_are_comparable_across_image_sizes(vgg, content, style):
    """From 64 to 128 px a sum over positions grows 4x. The relative errors keep the terms from growing (they
    are blind to any constant factor in the Gram), and the Gram divided by C*H*W keeps the targets themselves
    comparable. Each ratio must stay closer to 1 than to 4: inside the geometric midpoint, a factor 2."""
    small, large = terms_at(vgg, content, style, 64), terms_at(vgg, content, style, 128)
    for name in ("content", "style"):
        assert 0.5 < small[name] / large[name] < 2, (name, small, large)
    assert small["content"] > 0 and small["style"] > 0
    small_targets = style_targets(vgg, [resize(style, 64, 64)], [1.0], (64, 64), 1.0)
    large_targets = style_targets(vgg, [resize(style, 128, 128)], [1.0], (128, 128), 1.0)
    for layer in STYLE_LAYERS:
        ratio = float(small_targets[layer].norm() / large_targets[layer].norm())
        assert 0.5 < ratio < 2, (layer, ratio)


def test_gram_is_a_mean_over_positions_and_channels(vgg, style):
    small = vgg(resize(style, 64, 64))["relu2_1"]
    large = vgg(resize(style, 128, 128))["relu2_1"]
    ratio = float(gram_matrix(small).norm() / gram_matrix(large).norm())
    assert 0.5 < ratio < 2
    # An unnormalized Gram (a sum over positions) grows with the pixel count: four times here.
    raw_small, raw_large = (f[0].flatten(1) @ f[0].flatten(1).T for f in (small, large))
    assert float(raw_small.norm() / raw_large.norm()) == pytest.approx(ratio / 4, rel=1e-4)
    channels = small.shape[1]
    flat = small[0].reshape(channels, -1)
    assert torch.allclose(gram_matrix(small), flat @ flat.T / flat.numel())


def test_gram_backward_matches_autograd():
    features = torch.rand(1, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gram_matrix, (features,))
    weights = torch.rand(3, 3, dtype=torch.float64)
    (gram_matrix(features) * weights).sum().backward()
    flat = features.detach().reshape(3, -1).clone().requires_grad_(True)
    (flat @ flat.T / flat.numel() * weights).sum().backward()
    assert torch.allclose(features.grad.reshape(3, -1), flat.grad)


def test_tv_loss_known_values():
    assert float(tv_loss(torch.full((1, 3, 8, 8), 0.3))) == 0.0
    stripes = torch.zeros(1, 3, 8, 8)
    stripes[..., ::2] = 1.0  # columns alternate 1, 0: every horizontal difference is +-1, vertical ones 0
    assert float(tv_loss(stripes)) == pytest.approx(1.0)
    # Per-pixel noise has the same TV whatever the size.
    generator = torch.Generator().manual_seed(0)
    small = tv_loss(torch.rand(1, 3, 32, 32, generator=generator))
    large = tv_loss(torch.rand(1, 3, 128, 128, generator=generator))
    assert float(small / large) == pytest.approx(1.0, abs=0.1)


def test_blend_weights():
    a = {"relu1_1": torch.ones(2, 2)}
    b = {"relu1_1": torch.full((2, 2), 3.0)}
    assert torch.equal(blend_grams([a, b], [1, 0])["relu1_1"], a["relu1_1"])
    assert torch.allclose(blend_grams([a, b], [1, 1])["relu1_1"], torch.full((2, 2), 2.0))
    assert torch.allclose(blend_grams([a, b], [3, 1])["relu1_1"], torch.full((2, 2), 1.5))
    assert torch.allclose(blend_grams([a, b], [6, 2])["relu1_1"], torch.full((2, 2), 1.5))


def test_blended_targets_sit_between_the_styles(vgg, content, style):
    size = (64, 64)
    first = style_targets(vgg, [style], [1.0], size, 1.0)
    second = style_targets(vgg, [content], [1.0], size, 1.0)
    mixed = style_targets(vgg, [style, content], [1.0, 3.0], size, 1.0)
    for layer in STYLE_LAYERS:
        assert torch.allclose(mixed[layer], 0.25 * first[layer] + 0.75 * second[layer], atol=1e-6)


def test_style_scale_resizes_the_style(vgg, style):
    fine = style_targets(vgg, [style], [1.0], (64, 64), 0.5)
    coarse = style_targets(vgg, [style], [1.0], (64, 64), 2.0)
    assert not torch.allclose(fine["relu3_1"], coarse["relu3_1"])


def test_schedule_single_scale_below_the_pyramid_start():
    assert build_schedule(300, 200, 100) == [build_schedule(300, 200, 100)[0]]
    (scale,) = build_schedule(300, 200, 100)
    assert (scale.width, scale.height, scale.iterations) == (300, 200, 100)


def test_schedule_octaves_from_about_256_with_fewer_iterations_on_top():
    scales = build_schedule(1024, 768, 300)
    assert [(s.width, s.height) for s in scales] == [(256, 192), (512, 384), (1024, 768)]
    assert [s.iterations for s in scales] == [300, 150, 75]
    big = build_schedule(2048, 2048, 300)
    assert [s.width for s in big] == [256, 512, 1024, 2048]
    # Halving stops at a quarter of the coarse count.
    assert [s.iterations for s in big] == [300, 150, 75, 75]
    assert [s.width for s in build_schedule(512, 256, 10)] == [256, 512]
    # A thin strip gets fewer octaves so that no scale is thinner than 16 px.
    assert [(s.width, s.height) for s in build_schedule(2048, 32, 10)] == [(1024, 16), (2048, 32)]


def test_lbfgs_history_shrinks_at_high_resolution():
    # Two fp32 vectors per entry under 1 GiB: 2**30 // (8 * 3 * side**2), between 5 and 100.
    assert lbfgs_history(3 * 256 * 256) == 100
    assert lbfgs_history(3 * 1024 * 1024) == 42
    assert lbfgs_history(3 * 2048 * 2048) == 10
    assert lbfgs_history(3 * 8192 * 8192) == 5


@pytest.mark.parametrize(("side", "history"), [(256, 100), (1024, 42), (2048, 10)])
def test_the_optimizer_keeps_that_history(side, history):
    # A meta-device image: the optimizer is built as for a real run, without allocating the image.
    image = torch.empty(1, 3, side, side, device="meta")
    optimization = Optimization(None, image, "lbfgs")
    assert isinstance(optimization.optimizer, torch.optim.LBFGS)
    group = optimization.optimizer.param_groups[0]
    assert group["history_size"] == history
    # One evaluation per iteration, no line search, and tolerances that never stop it early.
    assert (group["max_iter"], group["lr"], group["line_search_fn"]) == (1, 1.0, None)
    assert group["tolerance_grad"] == group["tolerance_change"] == -math.inf
    adam = Optimization(None, image, "adam", adam_lr=0.03).optimizer
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["lr"] == 0.03


def test_lbfgs_runs_every_iteration_with_one_evaluation_each(vgg, content, style):
    grams = style_targets(vgg, [style], [1.0], (32, 32), 1.0)
    small = resize(content, 32, 32)
    optimization = Optimization(Objective(vgg, small, grams, **DEFAULT_WEIGHTS), small, "lbfgs")
    losses = [optimization.step()["total"] for _ in range(15)]
    # No line search and no early stop: exactly one evaluation per iteration, all of them run.
    assert optimization.evaluations == 15
    assert losses[-1] < 0.5 * losses[0]


def test_lbfgs_keeps_stepping_when_the_gradient_is_tiny(vgg, content, style):
    # At high resolution the per-pixel gradient of the normalized loss is tiny; L-BFGS's default
    # tolerance_grad (1e-7) would then skip every update and leave the image where it started.
    weights = {"content_weight": 0.0, "style_weight": 1e-8, "tv_weight": 0.0}
    grams = style_targets(vgg, [style], [1.0], (32, 32), 1.0)
    start = resize(content, 32, 32)
    optimization = Optimization(Objective(vgg, start, grams, **weights), start, "lbfgs")
    for _ in range(3):
        optimization.step()
    assert optimization.image.grad.abs().max() < 1e-7
    assert not torch.equal(optimization.image.detach(), start)


def test_adam_keeps_the_image_in_range(vgg, content, style):
    grams = style_targets(vgg, [style], [1.0], (32, 32), 1.0)
    objective = Objective(vgg, resize(content, 32, 32), grams, **DEFAULT_WEIGHTS)
    optimization = Optimization(objective, resize(content, 32, 32), "adam", adam_lr=0.2)
    first = optimization.step()["total"]
    for _ in range(9):
        last = optimization.step()["total"]
    assert last < first
    assert optimization.image.min() >= 0 and optimization.image.max() <= 1


def test_iterate_yields_previews_then_the_result(vgg, content, style):
    steps = []
    events = list(
        iterate(
            vgg,
            resize(content, 48, 48),
            [resize(style, 48, 48)],
            make_job(iterations=6, preview_every=2),
            on_step=steps.append,
        )
    )
    assert [type(e) for e in events] == [Preview, Preview, Final]
    assert [e.step.iteration for e in events[:2]] == [2, 4]
    assert [s.iteration for s in steps] == [1, 2, 3, 4, 5, 6]
    # The one progress shape (runtime.Progress): the stage, its step and its total.
    assert [(s.stage, s.step, s.total) for s in steps[:2]] == [("scale 1/1", 1, 6), ("scale 1/1", 2, 6)]
    assert events[-1].evaluations == 6
    assert events[-1].image.shape == (1, 3, 48, 48)


def test_multi_scale_run_ends_at_the_target_size(vgg, content, style):
    steps = []
    job = make_job(iterations=4, pyramid_start=48)
    result = run_to_end(vgg, resize(content, 96, 64), [style], job, on_step=steps.append)
    assert result.image.shape == (1, 3, 64, 96)
    assert [s.size for s in steps] == [(48, 32)] * 4 + [(96, 64)] * 2
    assert [(s.stage, s.step, s.total) for s in steps[3:5]] == [("scale 1/2", 4, 4), ("scale 2/2", 1, 2)]
    assert result.evaluations == 6


def test_one_progress_bar_counts_every_scale_and_each_scale_logs_one_line(
    vgg, content, style, monkeypatch, capsys, caplog
):
    monkeypatch.setenv(runtime.PROGRESS_INTERVAL_ENV, "0")
    with caplog.at_level(logging.INFO, logger="predictors.nst.optimize"):
        run_to_end(vgg, resize(content, 96, 64), [style], make_job(iterations=4, pyramid_start=48))
    # Scales of 4 and 2 iterations: one bar of 6, not two bars.
    lines = progress_lines(capsys.readouterr().out)
    assert [(current, total) for _, current, total in lines] == [(done, 6) for done in range(7)]
    summaries = [record.getMessage() for record in caplog.records]
    assert len(summaries) == 2
    assert summaries[0].startswith("Scale 1/2 (48x32) done: 4 iterations, last losses total ")
    assert summaries[1].startswith("Scale 2/2 (96x64) done: 2 iterations, last losses total ")


def test_inits_and_seed(vgg, content, style):
    small_content, small_style = resize(content, 32, 32), resize(style, 32, 32)

    def start(**kwargs):
        return run_to_end(vgg, small_content, [small_style], make_job(iterations=0, **kwargs)).image

    assert torch.equal(start(init="content"), small_content)
    assert torch.allclose(start(init="style"), small_style)
    assert torch.equal(start(init="noise", seed=3), start(init="noise", seed=3))
    assert not torch.equal(start(init="noise", seed=3), start(init="noise", seed=4))
    fast = torch.rand(1, 3, 64, 64)
    image = run_to_end(
        vgg, small_content, [small_style], make_job(iterations=0, init="fast"), init_image=fast
    ).image
    assert torch.allclose(image, resize(fast, 32, 32))


def test_same_seed_same_result(vgg, content, style):
    def run(seed):
        return run_to_end(
            vgg,
            resize(content, 32, 32),
            [resize(style, 32, 32)],
            make_job(iterations=5, init="noise", seed=seed),
        ).image

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_a_cancel_raised_between_iterations_propagates(vgg, content, style):
    class Cancel(BaseException):
        pass

    steps = []

    def on_step(step):
        steps.append(step.iteration)
        if step.iteration == 3:
            raise Cancel

    with pytest.raises(Cancel):
        run_to_end(
            vgg, resize(content, 32, 32), [resize(style, 32, 32)], make_job(iterations=50), on_step=on_step
        )
    assert steps == [1, 2, 3]
