"""The MusePose predictor with TRIPTYCH_MUSEPOSE_RANKS=2 on the CPU: setup() starts a gloo worker process,
predict() shares the windows, and the video equals the one-process predictor's."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from predictors.common.video import VideoWriter
from predictors.musepose.distributed import RANKS_ENV
from tests.call_predict import call_predict

# With the other distributed tests: one torch.distributed group per process, one forkserver for all.
pytestmark = pytest.mark.xdist_group("musepose-distributed")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("musepose-ranks")
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / "ref.png")
    with VideoWriter(folder / "pose.mp4", 12) as writer:
        for _ in range(8):
            writer.write(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    return {"reference_image": folder / "ref.png", "dance_video": folder / "pose.mp4"}


def predict(predictor, inputs: dict[str, Path]) -> np.ndarray:
    values = {
        **inputs,
        # 5 pose frames as they are, padded to 7: 2 windows of 4 (overlap 1) per step, 2 steps.
        "pose_video": True,
        "resolution": 64,
        "max_frames": 5,
        "skip": 0,
        "num_inference_steps": 2,
        "window": 4,
        "overlap": 1,
        "seed": 5,
        "keep_audio": False,
    }
    video = call_predict(predictor, **values).video
    with av.open(str(video)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_two_ranks_from_the_environment_give_the_one_process_video(
    tiny_predictor, inputs, monkeypatch, capsys
):
    monkeypatch.delenv(RANKS_ENV, raising=False)
    with tiny_predictor("predictors.musepose.predict", ["dwpose", "musepose"]) as predictor:
        alone = predict(predictor, inputs)
    monkeypatch.setenv(RANKS_ENV, "2")
    with tiny_predictor("predictors.musepose.predict", ["dwpose", "musepose"]) as predictor:
        team = predictor.animator.pipeline.team
        try:
            together = predict(predictor, inputs)
            # Window 1 ran on rank 0, window 2 on rank 1, for 2 steps.
            assert predictor.animator.pipeline.unet_calls == [2, 2]
        finally:
            team.close()
    logs = capsys.readouterr().out
    assert "MusePose runs on 2 process(s): rank 0 in this process, 1 worker process(es) on cpu." in logs
    assert "windows per process: process 0: 1 (4 frames); process 1: 2 (4 frames)" in logs
    assert together.shape == alone.shape == (5, 64, 64, 3)
    # The decoded frames agree within 1e-5, far below one 8-bit level: the same pixels reach the encoder.
    np.testing.assert_array_equal(together, alone)
