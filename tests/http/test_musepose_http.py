"""MusePose through the real Cog HTTP server on tiny weights: sync, validation errors, a corrupt video
(clear error, server still READY), and async with a webhook."""

from __future__ import annotations

import io
import os

import av
import numpy as np
import pytest
from PIL import Image

from tests.http.harness import (
    assert_validation_errors,
    data_uri,
    decode_output,
    output_bytes,
    tiny_environment,
)
from tests.replicate_progress import client_progress

pytestmark = [pytest.mark.http, pytest.mark.xdist_group("http-musepose")]

FAST = {"resolution": 64, "max_frames": 4, "num_inference_steps": 1, "window": 4, "overlap": 1, "seed": 3}


@pytest.fixture(scope="module")
def server(predictor_server):
    return predictor_server("predictors/musepose/predict.py", env=tiny_environment(["dwpose", "musepose"]))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("musepose-http")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)).save(
        folder / "ref.png"
    )
    with av.open(str(folder / "dance.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for index in range(4):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * index, np.uint8), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    return {name: data_uri(folder / name) for name in ("ref.png", "dance.mp4", "broken.mp4")}


def decoded_frames(data: bytes, tmp_path) -> int:
    path = tmp_path / "out.mp4"
    path.write_bytes(data)
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(container.streams.video[0]))


def test_sync_prediction_returns_the_videos(server, files, tmp_path):
    prediction = server.predict(
        {
            "reference_image": files["ref.png"],
            "dance_video": files["dance.mp4"],
            "save_aligned_pose": True,
            **FAST,
        }
    )
    assert prediction["status"] == "succeeded", prediction.get("error")
    output = prediction["output"]
    assert sorted(output) == ["comparison", "pose_preview", "pose_video", "video"]
    assert output["comparison"] is None
    assert decoded_frames(decode_output(output["video"]), tmp_path) == 2  # 4 frames, one in 2
    assert decoded_frames(decode_output(output["pose_video"]), tmp_path) == 2
    assert Image.open(io.BytesIO(decode_output(output["pose_preview"]))).format == "PNG"
    assert len(output_bytes(prediction)) == 3
    # The denoising bar (1 step x 1 window) ends the logs at 100%, as a Replicate client reads them.
    assert client_progress(prediction["logs"]) == (100, 1, 1)


def test_pose_only_returns_the_poses_and_never_starts_denoising(server, files, tmp_path):
    prediction = server.predict(
        {"reference_image": files["ref.png"], "dance_video": files["dance.mp4"], "pose_only": True, **FAST}
    )
    assert prediction["status"] == "succeeded", prediction.get("error")
    output = prediction["output"]
    assert output["video"] is None and output["comparison"] is None
    assert decoded_frames(decode_output(output["pose_video"]), tmp_path) == 2
    preview = Image.open(io.BytesIO(decode_output(output["pose_preview"])))
    assert preview.format == "PNG"
    assert "Pose only: 2 pose frames written, nothing generated." in prediction["logs"]
    assert "Denoising" not in prediction["logs"]


def test_validation_errors(server, files):
    response = server.post_prediction(
        {"dance_video": files["dance.mp4"], "num_inference_steps": 0, "window": 500, "aspect": "wide"}
    )
    assert_validation_errors(
        response,
        {
            "reference_image": "Field required",
            "num_inference_steps": "minimum of 1",
            "window": "maximum of 128",
            "aspect": "wide",
        },
    )


def test_corrupt_video_is_a_clear_error_and_the_server_stays_ready(server, files):
    prediction = server.predict(
        {"reference_image": files["ref.png"], "dance_video": files["broken.mp4"], **FAST}
    )
    assert prediction["status"] == "failed"
    assert "video could not be" in prediction["error"]
    server.wait_ready()
    assert server.health()["status"] == "READY"
    again = server.predict({"reference_image": files["ref.png"], "dance_video": files["dance.mp4"], **FAST})
    assert again["status"] == "succeeded", again.get("error")


def test_async_prediction_with_webhook(server, files, webhook, tmp_path):
    started = server.predict_async(
        {"reference_image": files["ref.png"], "dance_video": files["dance.mp4"], **FAST}, webhook.url
    )
    final = webhook.wait_completed(started["id"])
    assert final["status"] == "succeeded", final.get("error")
    assert decoded_frames(output_bytes(final)[0], tmp_path) == 2
