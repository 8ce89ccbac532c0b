"""The sd_style predictor behind the real Cog HTTP server, on tiny SD1.5 weights in the real layout."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from predictors.common import media
from tests.http.harness import assert_validation_errors, data_uri, output_bytes, tiny_environment
from tests.replicate_progress import client_progress

pytestmark = [pytest.mark.http, pytest.mark.xdist_group("http-sd-style")]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sd-style-http")
    pixels = np.full((96, 128, 3), 80, np.uint8)
    pixels[20:60, 30:90] = 230
    Image.fromarray(pixels).save(folder / "content.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        folder / "style.png"
    )
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return {
        "path": folder / "content.png",
        "image": data_uri(folder / "content.png"),
        "style_image": data_uri(folder / "style.png"),
        "corrupt": data_uri(folder / "corrupt.jpg", "image/jpeg"),
    }


@pytest.fixture(scope="module")
def server(predictor_server):
    return predictor_server("predictors/sd_style/predict.py", env=tiny_environment(["sd15", "sdxl"]))


def test_sync_prediction_with_two_outputs(server, inputs):
    prediction = server.predict(
        {
            "image": inputs["image"],
            "style_image": inputs["style_image"],
            "num_outputs": 2,
            "num_inference_steps": 2,
            "max_side": 256,
            "seed": 42,
            "output_format": "png",
        }
    )
    assert prediction["status"] == "succeeded", prediction.get("error")
    images = [Image.open(io.BytesIO(data)) for data in output_bytes(prediction)]
    assert len(images) == 2 and all(image.size == (256, 192) and image.format == "PNG" for image in images)
    assert "Using seed 42" in prediction["logs"]


def test_control_image_comes_last_as_png(server, inputs):
    prediction = server.predict(
        {
            "image": inputs["image"],
            "style_image": inputs["style_image"],
            "num_inference_steps": 1,
            "max_side": 256,
            "canny_low": 50,
            "canny_high": 120,
            "return_control_image": True,
            "disable_safety_checker": True,
        }
    )
    assert prediction["status"] == "succeeded", prediction.get("error")
    image, control = (Image.open(io.BytesIO(data)) for data in output_bytes(prediction))
    assert (image.format, control.format) == ("WEBP", "PNG")
    content = media.resize(media.load_image(inputs["path"]), (256, 192))
    expected = cv2.Canny(cv2.cvtColor(np.asarray(content), cv2.COLOR_RGB2GRAY), 50, 120)
    np.testing.assert_array_equal(np.asarray(control.convert("L")), expected)


def test_range_and_choice_violations_are_422(server, inputs):
    response = server.post_prediction(
        {
            "image": inputs["image"],
            "style_image": inputs["style_image"],
            "num_outputs": 5,
            "style_mode": "everything",
            "scheduler": "PLMS",
            "denoise_strength": 1.5,
        }
    )
    assert_validation_errors(
        response,
        {
            "num_outputs": "greater than the maximum of 4",
            "style_mode": "is not one of",
            "scheduler": "is not one of",
            "denoise_strength": "greater than the maximum of 1",
        },
    )


def test_corrupt_style_image_fails_clearly_and_the_server_stays_ready(server, inputs):
    prediction = server.predict(
        {"image": inputs["image"], "style_image": inputs["corrupt"], "num_inference_steps": 2}
    )
    assert prediction["status"] == "failed"
    assert "style image" in prediction["error"]
    assert server.wait_ready(30)["status"] == "READY"
    again = server.predict(
        {
            "image": inputs["image"],
            "style_image": inputs["style_image"],
            "num_inference_steps": 1,
            "max_side": 256,
        }
    )
    assert again["status"] == "succeeded", again.get("error")


def _last_step(logs: str) -> int:
    progress = client_progress(logs)
    return progress[1] if progress else 0


def test_cancel_lands_within_a_step(server, webhook, inputs):
    server.predict_async(
        {
            "image": inputs["image"],
            "style_image": inputs["style_image"],
            "num_inference_steps": 100,
            "max_side": 384,
        },
        webhook.url,
        prediction_id="sd-cancel",
    )
    event = webhook.wait_for(lambda e: e["id"] == "sd-cancel" and _last_step(e.get("logs")) >= 2)
    seen = _last_step(event["logs"])
    assert server.cancel("sd-cancel").status_code == 200
    final = webhook.wait_completed("sd-cancel")
    assert final["status"] == "canceled"
    # Steps log as they end: at most the step running when the cancel arrived (and one in flight) follow.
    assert _last_step(final["logs"]) <= seen + 2 < 100
    assert server.wait_ready(30)["status"] == "READY"


def test_turbo_runs_four_lcm_steps_when_steps_are_left_empty(server, inputs):
    prediction = server.predict(
        {"image": inputs["image"], "style_image": inputs["style_image"], "turbo": True, "max_side": 256}
    )
    assert prediction["status"] == "succeeded", prediction.get("error")
    assert "{'main': 4} steps (LCM, turbo)" in prediction["logs"]
    assert client_progress(prediction["logs"]) == (100, 4, 4)
    assert len(output_bytes(prediction)) == 1
