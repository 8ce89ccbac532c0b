"""Upstream's window arithmetic (test_stage_2.py's padding + the uniform context scheduler), as pure
functions, and the decoded frames' conversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from predictors.musepose.pipeline import context_windows, pad_poses, padding_repeats, to_output_frames
from tests.upstream import upstream_uniform_windows


@pytest.mark.parametrize(
    ("length", "window", "overlap", "repeats"),
    [
        (6, 4, 1, 1),
        (12, 4, 1, 1),
        (13, 4, 1, 0),
        (3, 4, 1, 1),
        (2, 4, 1, 2),
        (1, 4, 1, 0),
        (50, 48, 4, 42),
        (5, 4, 0, 3),
        (4, 4, 0, 0),
        (4, 4, 1, 0),
        (7, 3, 2, 0),
    ],
)
def test_padding_repeats(length, window, overlap, repeats):
    assert padding_repeats(length, window, overlap) == repeats


@pytest.mark.parametrize(("window", "overlap"), [(2, 0), (3, 0), (3, 2), (4, 1), (5, 4), (8, 3), (48, 4)])
def test_windows_equal_upstreams_scheduler_for_any_length(window, overlap):
    # Unpadded lengths included: there upstream wraps the last window around, and so do we.
    for frames in range(1, 3 * window + 2):
        assert context_windows(frames, window, overlap) == upstream_uniform_windows(frames, window, overlap)


@pytest.mark.parametrize("length", range(1, 40))
@pytest.mark.parametrize(("window", "overlap"), [(4, 1), (8, 3), (6, 0), (48, 4)])
def test_padded_windows_tile_without_wrap(length, window, overlap):
    frames = length + padding_repeats(length, window, overlap)
    windows = context_windows(frames, window, overlap)
    covered = sorted({index for frame_ids in windows for index in frame_ids})
    assert covered == list(range(frames))
    assert all(frame_ids == sorted(frame_ids) for frame_ids in windows)  # no wrap-around
    assert all(len(frame_ids) == min(window, frames) for frame_ids in windows)


def test_pad_poses_repeats_the_last_frame():
    poses = np.arange(6)[:, None, None, None].repeat(2, 1).astype(np.uint8)
    padded = pad_poses(poses, 4, 1)
    assert padded.shape[0] == 7 and (padded[-1] == 5).all() and (padded[:6] == poses).all()


def test_output_frames_truncate_after_bilinear_resize():
    frames = torch.full((1, 3, 2, 2), 0.999)
    out = to_output_frames(frames, (4, 6))
    assert out.shape == (1, 6, 4, 3) and out.dtype == np.uint8 and (out == 254).all()  # 254.745 -> 254
