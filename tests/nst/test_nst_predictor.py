"""The nst Predictor on tiny weights in the real layout (torchvision VGG19 keys, the real Magenta ONNX)."""

from __future__ import annotations

import hashlib
import weakref

import pytest
import torch
from PIL import Image

from predictors.common.errors import InputError, ResourceError
from predictors.nst.transfer import Job
from tests.call_predict import call_predict
from tests.conftest import REPO_ROOT

CONTENT = REPO_ROOT / "examples" / "content.jpg"
STYLE = REPO_ROOT / "examples" / "style.png"

# The tests' own defaults: a small, short run without previews (the rest are the Input defaults).
SMALL = {"max_side": 48, "iterations": 4, "seed": 0, "preview_every": 0}


@pytest.fixture(scope="module")
def predictor(tiny_predictor):
    with tiny_predictor("predictors.nst.predict", ["vgg19"]) as instance:
        yield instance


def run(predictor, **inputs):
    return list(call_predict(predictor, image=CONTENT, style_image=STYLE, **{**SMALL, **inputs}))


def digest(path):
    return hashlib.sha256(Image.open(path).tobytes()).hexdigest()


def final_digest(predictor, **inputs):
    """Digest of the final image, taken before the next prediction deletes the file."""
    return digest(run(predictor, **inputs)[-1])


def test_setup_resolves_every_file_through_the_tiny_manifest(predictor):
    assert predictor.transfer.features("max", "zeros").body[0].out_channels == 4  # conv1_1
    assert predictor.transfer.fast.transform.get_inputs()[0].shape == [1, 384, 384, 3]


def test_default_path_returns_one_png_at_the_requested_size(predictor):
    (output,) = run(predictor)
    with Image.open(output) as image:
        assert image.format == "PNG"
        assert image.size == (48, 48)
    assert output.name.startswith("output-")


def test_previews_come_first_then_the_final_image(predictor):
    outputs = run(predictor, iterations=6, preview_every=2)
    assert [path.name.split("-")[0] for path in outputs] == ["preview", "preview", "output"]
    assert len({path.name for path in outputs}) == 3
    assert all(path.exists() for path in outputs)


def test_previous_outputs_are_cleaned(predictor):
    first = run(predictor, iterations=1)
    run(predictor, iterations=1)
    assert not first[0].exists()


def test_several_styles_with_blend_weights(predictor, tmp_path):
    red = tmp_path / "red.png"
    Image.new("RGB", (40, 40), (220, 30, 30)).save(red)
    single = final_digest(predictor)
    assert final_digest(predictor, style_image_2=red, style_weights="1,0") == single
    assert final_digest(predictor, style_image_2=red, style_weights="1,1") != single
    three = run(predictor, style_image_2=red, style_image_3=STYLE, style_weights="1,0.5,2")
    assert len(three) == 1


@pytest.mark.parametrize(
    ("weights", "message"),
    [("1", "1 value"), ("1,x", "comma-separated"), ("-1,2", "non-negative"), ("0,0", "non-negative")],
)
def test_bad_blend_weights_are_input_errors(predictor, weights, message):
    with pytest.raises(InputError, match=message):
        run(predictor, style_image_2=STYLE, style_weights=weights)


@pytest.mark.parametrize(
    "option",
    [
        {"optimizer": "adam"},
        {"init": "noise"},
        {"init": "style"},
        {"init": "fast"},
        {"color_preservation": "luminance"},
        {"color_preservation": "histogram"},
        {"pooling": "avg"},
        {"padding": "reflect"},
        {"padding": "replicate"},
        {"style_scale": 0.5},
        {"style_strength": 0.0, "content_weight": 5.0, "tv_weight": 0.0},
        {"iterations": None, "quality": "draft", "max_side": 32},
        {"output_format": "jpg", "output_quality": 50},
        {"output_format": "webp"},
        {"max_side": 100},
    ],
    ids=lambda option: "-".join(f"{k}={v}" for k, v in option.items()),
)
def test_every_option_gives_an_image(predictor, option):
    outputs = run(predictor, **option)
    with Image.open(outputs[-1]) as image:
        expected_format = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}[option.get("output_format", "png")]
        assert image.format == expected_format
        side = option.get("max_side", 48)
        assert max(image.size) == side - side % 16
    # Each option changes the result relative to the default run.
    if "output_format" not in option:
        changed = digest(outputs[-1])
        assert changed != final_digest(predictor)


class Stop(Exception):
    """Ends a prediction once the stylisation call has been seen."""


@pytest.fixture
def seen_calls(monkeypatch):
    """The arguments of every call of the core's ``iterate``; the call raises Stop instead of running."""
    calls = []

    def record(vgg, content, styles, job, **options):
        calls.append({"vgg": vgg, "job": job, "content": content, "styles": styles, **options})
        raise Stop

    monkeypatch.setattr("predictors.nst.transfer.iterate", record)
    return calls


def test_inputs_reach_the_optimization_by_value(predictor, seen_calls):
    with pytest.raises(Stop):
        run(
            predictor,
            style_image_2=STYLE,
            style_weights="1,3",
            style_strength=0.5,
            content_weight=3.0,
            tv_weight=7.0,
            iterations=9,
            optimizer="adam",
            init="noise",
            color_preservation="histogram",
            style_scale=0.5,
            pooling="avg",
            padding="reflect",
            precision="fp32",
            seed=5,
            preview_every=3,
        )
    (call,) = seen_calls
    assert call["job"] == Job(
        style_weights=(1.0, 3.0),
        style_strength=0.5,
        content_weight=3.0,
        tv_weight=7.0,
        quality="standard",
        iterations=9,
        optimizer="adam",
        init="noise",
        color_preservation="histogram",
        style_scale=0.5,
        pooling="avg",
        padding="reflect",
        precision="fp32",
        seed=5,
        preview_every=3,
    )
    assert len(call["styles"]) == 2 and call["dtype"] == torch.float32
    assert call["content"].shape == (1, 3, 48, 48)
    vgg = call["vgg"]
    assert vgg.pooling == "avg"
    assert {conv.padding_mode for conv in vgg.body if isinstance(conv, torch.nn.Conv2d)} == {"reflect"}


@pytest.mark.parametrize(("quality", "iterations"), [("draft", 100), ("standard", 300), ("high", 600)])
def test_quality_presets_set_the_coarse_iterations(predictor, seen_calls, quality, iterations):
    with pytest.raises(Stop):
        run(predictor, quality=quality, iterations=None)
    assert seen_calls[0]["job"].coarse_iterations == iterations


def test_out_of_memory_in_the_optimisation_is_one_sentence_and_the_next_run_works(predictor, monkeypatch):
    """The GPU recovery path on the CPU: an allocation inside the VGG pass fails as CUDA's allocator fails."""
    held: list[weakref.ref] = []
    released_before_emptying: list[bool] = []
    monkeypatch.setattr(
        torch.cuda, "empty_cache", lambda: released_before_emptying.append(all(r() is None for r in held))
    )

    def allocate(module, args):
        activations = torch.empty(1 << 16)
        held.append(weakref.ref(activations))
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    hook = predictor.transfer.features("max", "zeros").body[0].register_forward_pre_hook(allocate)
    try:
        with pytest.raises(ResourceError) as caught:
            run(predictor)
    finally:
        hook.remove()
    assert str(caught.value) == "The GPU ran out of memory. Lower max_side, or use fewer style images."
    assert caught.value.__cause__ is None and released_before_emptying == [True]
    (output,) = run(predictor)
    assert Image.open(output).size == (48, 48)


def test_landscape_keeps_its_aspect(predictor, tmp_path):
    wide = tmp_path / "wide.png"
    Image.open(CONTENT).resize((200, 100)).save(wide)
    (output,) = list(call_predict(predictor, image=wide, style_image=STYLE, **SMALL))
    assert Image.open(output).size == (48, 32)


def test_same_seed_same_output_different_seed_different(predictor):
    first = final_digest(predictor, init="noise", seed=11)
    assert final_digest(predictor, init="noise", seed=11) == first
    assert final_digest(predictor, init="noise", seed=12) != first


def test_missing_seed_draws_one_and_logs_it(predictor, caplog):
    with caplog.at_level("INFO", logger="triptych"):
        run(predictor, seed=None, iterations=1)
    assert "Using seed" in caplog.text


def test_fast_preview_only_skips_vgg(predictor, monkeypatch):
    def no_vgg(*args, **kwargs):
        raise AssertionError("VGG19 must not run for a 0-iteration fast preview")

    monkeypatch.setattr(predictor.transfer, "features", no_vgg)
    (output,) = run(
        predictor, init="fast", iterations=0, max_side=96, preview_every=5, color_preservation="luminance"
    )
    assert Image.open(output).size == (96, 96)


def test_fast_init_streams_the_feed_forward_preview_first(predictor):
    outputs = run(predictor, init="fast", iterations=2, preview_every=1)
    assert outputs[0].name.startswith("preview-fast")
    assert outputs[-1].name.startswith("output-")


def test_corrupt_content_is_a_clear_input_error(predictor, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not an image")
    with pytest.raises(InputError, match=r"^The image is not a picture file"):
        list(call_predict(predictor, image=broken, style_image=STYLE, **SMALL))


def test_a_broken_third_style_image_is_named_even_without_a_second(predictor, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not an image")
    with pytest.raises(InputError, match=r"^The style image 3 is not a picture file"):
        run(predictor, style_image_3=broken)
