"""Progress as Replicate's clients read it: every predictor, behind the real Cog server on tiny weights.

Each test runs one async prediction with a webhook, then reads the logs the way replicate-python does
(``tests/replicate_progress.py``). The final logs must hold one bar per long loop whose count rises one
update at a time from 0 to its total (100%), the streamed ``logs`` events must be the final logs as they
grew, and the last one must read 100% of the last bar. The servers print a progress line at every step
(the ``cog_server`` fixture sets TRIPTYCH_PROGRESS_INTERVAL=0); each server is stopped when its test ends,
so at most one runs at a time.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from predictors.common.video import VideoWriter
from tests.conftest import REPO_ROOT
from tests.http.harness import data_uri, tiny_environment
from tests.replicate_progress import client_progress, progress_lines

pytestmark = [pytest.mark.http, pytest.mark.xdist_group("http-progress"), pytest.mark.timeout(300)]

EVENT_TIMEOUT_S = 180


def bars(lines: list[tuple[int, int, int]]) -> list[list[tuple[int, int, int]]]:
    """The progress lines split into bars: a bar starts with its 0% line."""
    assert lines and lines[0][1] == 0, lines[:3]
    found: list[list[tuple[int, int, int]]] = []
    for line in lines:
        if line[1] == 0:
            found.append([])
        found[-1].append(line)
    return found


def run_and_check(server, webhook, prediction_id: str, inputs: dict, expected: list[list[int]]) -> None:
    """One async prediction whose bars count exactly ``expected``, read as a Replicate client reads them."""
    server.predict_async(inputs, webhook.url, events=("logs", "completed"), prediction_id=prediction_id)
    final = webhook.wait_completed(prediction_id, timeout=EVENT_TIMEOUT_S)
    assert final["status"] == "succeeded", final.get("error")
    lines = progress_lines(final["logs"])
    found = bars(lines)
    assert [[current for _, current, _ in bar] for bar in found] == expected
    for bar in found:
        total = bar[-1][1]
        assert {line_total for *_, line_total in bar} == {total}
        assert bar[-1] == (100, total, total)
    # Deliveries may arrive out of order, but logs only grow: their length orders the events. Each streamed
    # log is the start of the final one, so what a client read along the way was a line of the bars above.
    streamed = sorted(
        (event["logs"] or "" for event in webhook.events if event["id"] == prediction_id), key=len
    )
    assert all(final["logs"].startswith(logs) for logs in streamed)
    assert client_progress(streamed[-1]) == found[-1][-1]


def test_nst_counts_the_iterations_of_every_scale_in_one_bar(cog_server, webhook, tmp_path):
    content, style = tmp_path / "content.png", tmp_path / "style.png"
    Image.open(REPO_ROOT / "examples" / "content.jpg").resize((384, 256)).save(content)
    Image.open(REPO_ROOT / "examples" / "style.png").resize((64, 64)).save(style)
    server = cog_server("predictors/nst/predict.py", env=tiny_environment(["vgg19"]))
    try:
        # 384 px takes two scales (pyramid from 256 px): 4 iterations at 192x128, then 2 at 384x256.
        inputs = {"max_side": 384, "iterations": 4, "preview_every": 0, "seed": 0}
        inputs |= {"image": data_uri(content), "style_image": data_uri(style)}
        run_and_check(server, webhook, "progress-nst", inputs, [list(range(7))])
    finally:
        server.stop()


def test_sd_style_counts_the_steps_of_both_passes_in_one_bar(cog_server, webhook, tmp_path):
    pixels = np.full((96, 128, 3), 80, np.uint8)
    pixels[20:60, 30:90] = 230
    Image.fromarray(pixels).save(tmp_path / "content.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        tmp_path / "style.png"
    )
    server = cog_server("predictors/sd_style/predict.py", env=tiny_environment(["sd15", "sdxl"]))
    try:
        # img2img at 0.5 of 6 steps runs 3; the detail pass (img2img at 0.35 of 6) runs 2.
        inputs = {"num_inference_steps": 6, "denoise_strength": 0.5, "detail_pass": True, "max_side": 256}
        inputs["seed"] = 1
        inputs |= {
            "image": data_uri(tmp_path / "content.png"),
            "style_image": data_uri(tmp_path / "style.png"),
        }
        run_and_check(server, webhook, "progress-sd-style", inputs, [list(range(6))])
    finally:
        server.stop()


def test_musepose_counts_pose_frames_then_unet_calls(cog_server, webhook, tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)).save(
        tmp_path / "ref.png"
    )
    with VideoWriter(tmp_path / "dance.mp4", 8) as writer:
        for index in range(8):
            writer.write(np.full((32, 32, 3), 30 * index, np.uint8))
    server = cog_server("predictors/musepose/predict.py", env=tiny_environment(["dwpose", "musepose"]))
    try:
        # 8 frames, one in 2: 4 frames, detected in one batch; 2 steps x 1 window of 4.
        inputs = {"resolution": 64, "max_frames": 8, "num_inference_steps": 2, "window": 4, "overlap": 1}
        inputs["seed"] = 3
        inputs |= {
            "reference_image": data_uri(tmp_path / "ref.png"),
            "dance_video": data_uri(tmp_path / "dance.mp4"),
        }
        run_and_check(server, webhook, "progress-musepose", inputs, [[0, 4], [0, 1, 2]])
    finally:
        server.stop()
