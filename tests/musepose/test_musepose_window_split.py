"""The plans of the distributed MusePose path, as pure functions: window split, decode rounds, rank count."""

from __future__ import annotations

import pytest
import torch

from predictors.musepose.distributed import (
    RANKS_ENV,
    decode_rounds,
    describe_split,
    rank_devices,
    split_windows,
)
from predictors.musepose.pipeline import context_windows, padding_repeats


def test_equal_windows_go_round_robin():
    windows = context_windows(312, 48, 4)  # 300 frames at the defaults, padded
    assert len(windows) == 7
    assert split_windows(windows, 4) == [[0, 4], [1, 5], [2, 6], [3]]
    assert split_windows(windows, 2) == [[0, 2, 4, 6], [1, 3, 5]]
    assert split_windows(windows, 8) == [[0], [1], [2], [3], [4], [5], [6], []]
    assert split_windows(windows, 1) == [list(range(7))]


def test_windows_are_balanced_by_frame_count():
    windows = [list(range(10)), list(range(2)), list(range(2)), list(range(9)), list(range(3))]
    # Longest first to the least loaded rank: 10 -> 0, 9 -> 1, 3 -> 1 (9 < 10), 2 -> 0 (10 < 12), and the
    # last 2 -> 0 (12 = 12: the lower rank).
    assert split_windows(windows, 2) == [[0, 1, 2], [3, 4]]


@pytest.mark.parametrize("ranks", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("length", [1, 4, 7, 13, 50, 150, 300])
def test_every_window_runs_once_and_the_busiest_rank_has_the_ceiling(ranks, length):
    frames = length + padding_repeats(length, 48, 4)
    windows = context_windows(frames, 48, 4)
    shares = split_windows(windows, ranks)
    assert sorted(index for share in shares for index in share) == list(range(len(windows)))
    assert max(len(share) for share in shares) == -(-len(windows) // ranks)


def test_decode_rounds_cover_the_frames_in_order_and_evenly():
    assert decode_rounds(10, 2, 4) == [[(0, 4), (4, 8)], [(8, 9), (9, 10)]]
    assert decode_rounds(3, 4, 4) == [[(0, 0), (0, 1), (1, 2), (2, 3)]]
    assert decode_rounds(5, 1, 4) == [[(0, 4)], [(4, 5)]]
    for frames, ranks, chunk in [(312, 4, 4), (312, 8, 4), (7, 3, 2), (1, 2, 4)]:
        slices = [piece for bounds in decode_rounds(frames, ranks, chunk) for piece in bounds]
        assert [index for start, stop in slices for index in range(start, stop)] == list(range(frames))
        assert max(stop - start for start, stop in slices) <= chunk
    # 312 frames on 4 ranks: no rank decodes more than ceil(312 / 4) = 78 frames.
    per_rank = [0] * 4
    for bounds in decode_rounds(312, 4, 4):
        for rank, (start, stop) in enumerate(bounds):
            per_rank[rank] += stop - start
    assert per_rank == [78, 78, 78, 78]


def test_the_split_is_logged_per_rank():
    assert describe_split(context_windows(10, 4, 1), 2, "GPU") == (
        "3 window(s) per step over 2 GPU(s); windows per GPU: GPU 0: 1, 3 (8 frames); GPU 1: 2 (4 frames)"
    )
    assert describe_split([[0, 1]], 2, "process").endswith("process 1: none (0 frames)")


def test_rank_count_from_the_environment(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv(RANKS_ENV, raising=False)
    assert rank_devices(cpu) == [cpu]
    monkeypatch.setenv(RANKS_ENV, "3")
    assert rank_devices(cpu) == [cpu, cpu, cpu]
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(RANKS_ENV, bad)
        with pytest.raises(ValueError, match=f"{RANKS_ENV}=.* must be a whole number of processes"):
            rank_devices(cpu)


def test_gpu_ranks_take_consecutive_visible_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.delenv(RANKS_ENV, raising=False)
    assert rank_devices(torch.device("cuda")) == [torch.device("cuda", index) for index in range(4)]
    assert rank_devices(torch.device("cuda:2")) == [torch.device("cuda", 2)]
    monkeypatch.setenv(RANKS_ENV, "2")
    assert rank_devices(torch.device("cuda:2")) == [torch.device("cuda", 2), torch.device("cuda", 3)]
    monkeypatch.setenv(RANKS_ENV, "5")
    with pytest.raises(ValueError, match="more GPUs than the 4 visible from cuda:0"):
        rank_devices(torch.device("cuda"))
