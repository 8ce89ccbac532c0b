"""Hostile inputs against MusePose through the real Cog server on tiny weights: generation sizes below the
minimum, slivers of reference images, an elongated video, frame limits that leave nothing, JSON integers for
float inputs. Every case: one clear sentence, READY again, the next prediction succeeds, nothing left in the
temp directory (``tests/http/hostile.py``)."""

from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

from tests.http import hostile
from tests.http.harness import data_uri, tiny_environment

pytestmark = [pytest.mark.http, pytest.mark.xdist_group("http-musepose")]

FAST = {
    "resolution": 64,
    "max_frames": 2,
    "num_inference_steps": 1,
    "window": 2,
    "overlap": 0,
    "seed": 3,
    "keep_audio": False,
}


def write_video(path, width: int, height: int, frames: int = 4):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            # Grey, never black: the tiny detector finds its "person" in grey frames (none in black).
            frame = av.VideoFrame.from_ndarray(
                np.full((height, width, 3), 60 + 10 * index, np.uint8), format="rgb24"
            )
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("musepose-hostile")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)).save(
        folder / "ref.png"
    )
    return {
        "ref": data_uri(folder / "ref.png"),
        "dance": data_uri(write_video(folder / "dance.mp4", 64, 48)),
        "strip": data_uri(write_video(folder / "strip.mp4", 352, 16)),
    }


@pytest.fixture(scope="module")
def ok(files):
    return {"reference_image": files["ref"], "dance_video": files["dance"], **FAST}


@pytest.fixture(scope="module")
def server(predictor_server):
    return predictor_server("predictors/musepose/predict.py", env=tiny_environment(["dwpose", "musepose"]))


@pytest.mark.parametrize("side", [8, 16])
def test_a_generation_size_below_the_minimum_is_a_sentence(server, ok, side):
    fragment = f"The generation size would be {side}x{side} pixels; each side must be at least 32"
    hostile.refused(server, {**ok, "width": side, "height": side}, fragment, ok=ok)


@pytest.mark.parametrize(
    ("size", "fragment"),
    [
        ((20000, 20), "The reference image is 20000x20 pixels: its long side is more than 10 times"),
        ((40000, 1), "The reference image is 40000x1 pixels; each side must be at least 16"),
    ],
)
def test_an_extreme_reference_image_is_refused_before_any_work(server, ok, size, fragment):
    hostile.refused(
        server, {**ok, "reference_image": hostile.bytes_uri(hostile.png_header(*size))}, fragment, ok=ok
    )


def test_an_elongated_video_is_refused_before_decoding(server, ok, files):
    fragment = "The video is 352x16 pixels: its long side is more than 10 times its short side"
    hostile.refused(server, {**ok, "dance_video": files["strip"]}, fragment, ok=ok)


def test_frame_limits_that_leave_no_frame_name_the_limits(server, ok):
    fragment = "max_frames and max_seconds leave 1 frame(s) of the dance video"
    hostile.refused(server, {**ok, "max_frames": 1, "skip": 1}, fragment, ok=ok)


def test_float_inputs_take_json_integers(server, ok):
    hostile.accepted(server, {**ok, "guidance_scale": 2, "max_seconds": 1, "target_fps": 8}, ok=ok)


def test_nothing_was_written_into_home(server):
    assert sorted(str(path) for path in server.home_dir.rglob("*")) == []
