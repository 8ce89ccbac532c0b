"""The nst predictor through the real Cog server on tiny weights: sync with previews, validation, bad uploads,
cancellation."""

from __future__ import annotations

import contextlib
import inspect
import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO_ROOT
from tests.http.harness import assert_validation_errors, data_uri, output_bytes, tiny_environment
from tests.replicate_progress import progress_lines

pytestmark = [pytest.mark.http, pytest.mark.xdist_group("http-nst")]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nst-http")
    content, style = folder / "content.png", folder / "style.png"
    Image.open(REPO_ROOT / "examples" / "content.jpg").resize((96, 64)).save(content)
    Image.open(REPO_ROOT / "examples" / "style.png").resize((64, 64)).save(style)
    return {"image": content, "style_image": style}


@pytest.fixture(scope="module")
def images(files):
    return {name: data_uri(path) for name, path in files.items()}


@pytest.fixture(scope="module")
def server(predictor_server):
    return predictor_server("predictors/nst/predict.py", env=tiny_environment(["vgg19"]))


def iterations_logged(logs: str) -> list[int]:
    """The iteration counts of the progress lines (the first one is 0, printed before the first iteration)."""
    return [current for _, current, _ in progress_lines(logs)]


def printed_by_predictions(server_log: str) -> str:
    """What predictions printed, from the server log: one JSON record per line, the text in its message."""
    messages = []
    for line in server_log.splitlines():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            messages.append(json.loads(line)["fields"]["message"])
    return "\n".join(messages)


def test_sync_prediction_streams_previews_then_the_final_image(server, images, files, tiny_predictor):
    inputs = {"max_side": 64, "iterations": 6, "preview_every": 2, "seed": 1}
    prediction = server.predict({**images, **inputs})
    assert prediction["status"] == "succeeded", prediction.get("error")
    served = output_bytes(prediction)
    assert len(served) == 3  # previews at iterations 2 and 4, then the final image
    # Outputs come back as data: URIs, without their file names; the same prediction run in this process
    # names them, and its images are the served ones in the same order (CPU runs are deterministic).
    with tiny_predictor("predictors.nst.predict", ["vgg19"]) as predictor:
        parameters = inspect.signature(predictor.predict).parameters.items()
        defaults = {name: parameter.default.default for name, parameter in parameters}
        local = list(predictor.predict(**{**defaults, **files, **inputs}))
        assert [path.name.split("-")[0] for path in local] == ["preview", "preview", "output"]
        assert [path.name.split("-")[1] for path in local[:2]] == ["00002", "00004"]
        for path, data in zip(local, served, strict=True):
            same = np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(io.BytesIO(data))))
            assert same, path.name
    final = Image.open(io.BytesIO(served[-1]))
    assert (final.format, final.size) == ("PNG", (64, 48))
    assert iterations_logged(prediction["logs"])[-1] == 6
    assert "Using seed 1" in prediction["logs"]


def test_fast_preview_mode_returns_one_image(server, images):
    prediction = server.predict(
        {**images, "init": "fast", "iterations": 0, "max_side": 96, "output_format": "jpg"}
    )
    assert prediction["status"] == "succeeded", prediction.get("error")
    (image,) = output_bytes(prediction)
    assert Image.open(io.BytesIO(image)).format == "JPEG"
    assert iterations_logged(prediction["logs"]) == []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_side", 32, "minimum"),
        ("max_side", 4096, "maximum"),
        ("style_strength", -0.5, "minimum"),
        ("style_strength", 11, "maximum"),
        ("content_weight", -1, "minimum"),
        ("content_weight", 101, "maximum"),
        ("tv_weight", -1, "minimum"),
        ("tv_weight", 1001, "maximum"),
        ("iterations", -1, "minimum"),
        ("iterations", 5001, "maximum"),
        ("style_scale", 0.05, "minimum"),
        ("style_scale", 5, "maximum"),
        ("preview_every", -1, "minimum"),
        ("preview_every", 5001, "maximum"),
        ("output_quality", 0, "minimum"),
        ("output_quality", 101, "maximum"),
        ("quality", "ultra", "draft"),
        ("optimizer", "sgd", "lbfgs"),
        ("init", "zeros", "fast"),
        ("color_preservation", "all", "luminance"),
        ("pooling", "min", "avg"),
        ("padding", "circular", "reflect"),
        ("output_format", "gif", "webp"),
    ],
)
def test_range_and_choice_violations_are_422(server, images, field, value, message):
    response = server.post_prediction({**images, field: value})
    errors = assert_validation_errors(response, {field: ""})
    assert message in errors[field], errors


def test_missing_image_is_422(server, images):
    assert_validation_errors(
        server.post_prediction({"style_image": images["style_image"]}), {"image": "required"}
    )


@pytest.mark.parametrize(
    ("payload", "mime", "message"),
    [
        (b"this is plain text, not a picture", "image/png", "not a picture file we can read"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "image/png", "The image is corrupt"),
    ],
    ids=["text-as-png", "truncated-png"],
)
def test_corrupt_upload_fails_clearly_and_the_server_stays_ready(
    server, images, tmp_path, payload, mime, message
):
    broken = tmp_path / "broken.png"
    broken.write_bytes(payload)
    prediction = server.predict({**images, "image": data_uri(broken, mime)})
    assert prediction["status"] == "failed"
    assert message in prediction["error"]
    assert "Traceback" not in prediction["error"]
    assert server.wait_ready(30)["status"] == "READY"


def test_cancel_lands_within_an_iteration_and_the_server_recovers(server, images, webhook):
    server.predict_async(
        {**images, "max_side": 512, "iterations": 5000, "preview_every": 0, "seed": 0},
        webhook.url,
        prediction_id="nst-cancel",
    )
    webhook.wait_for(
        lambda event: event["id"] == "nst-cancel" and len(iterations_logged(event.get("logs"))) >= 3
    )
    assert server.cancel("nst-cancel").status_code == 200
    # Read once the cancel is accepted, so a test process that is slow to get here only loosens the bound.
    at_cancel = iterations_logged(printed_by_predictions(server.log_text()))[-1]
    final = webhook.wait_completed("nst-cancel")
    assert final["status"] == "canceled"
    done = iterations_logged(final.get("logs"))
    assert done and done[-1] < 5000
    # The server log is ahead of the webhook; the cancel lands inside the iteration that was running.
    assert done[-1] <= at_cancel + 2, (at_cancel, done[-1])
    assert server.wait_ready(30)["status"] == "READY"
    after = server.predict({**images, "max_side": 64, "iterations": 1})
    assert after["status"] == "succeeded", after.get("error")
