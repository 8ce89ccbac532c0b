"""The MusePose run's frame selection on real probed clips: how many frames are read and the exact output
rate; and the request's check."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from predictors.common import video
from predictors.common.errors import InputError
from predictors.musepose.animate import Request, frame_plan, output_fps, select_frames
from predictors.musepose.predict import Predictor
from tools.cog_runtime import input_defaults

NTSC = Fraction(30000, 1001)


def write_clip(path: Path, fps: Fraction, frames: int, audio_seconds: float = 0.0) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = 32, 32
        stream.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=16000, layout="mono") if audio_seconds else None
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 8 * index, np.uint8), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
        if audio is not None:
            samples = np.zeros((1, int(16000 * audio_seconds)), np.float32)
            for start in range(0, samples.shape[1], 1024):
                chunk = av.AudioFrame.from_ndarray(
                    samples[:, start : start + 1024], format="fltp", layout="mono"
                )
                chunk.sample_rate, chunk.pts = 16000, start
                container.mux(audio.encode(chunk))
            container.mux(audio.encode())
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, video.VideoInfo]:
    folder = tmp_path_factory.mktemp("rates")
    return {
        "ntsc_audio": video.probe(write_clip(folder / "a.mp4", NTSC, 20, audio_seconds=0.7)),
        "ntsc_silent": video.probe(write_clip(folder / "s.mp4", NTSC, 20)),
        "pal_audio": video.probe(write_clip(folder / "p.mp4", Fraction(25), 20, audio_seconds=0.8)),
    }


def request(**changes) -> Request:
    """A request as the predictor makes it: its ``Input`` defaults, then ``changes``."""
    files = {"reference_image": Path("ref.png"), "dance_video": Path("dance.mp4"), "seed": 0}
    return Request(**{**input_defaults(Predictor), **files, **changes})


def plan(info: video.VideoInfo, **changes):
    return select_frames(request(**changes), info)


def test_frame_plan_skip_and_length():
    assert frame_plan(12, 300, 1) == [0, 2, 4, 6, 8, 10]
    # L is cut before skipping: min(L, n) // (skip + 1), so 13 source frames still give 6.
    assert frame_plan(13, 300, 1) == [0, 2, 4, 6, 8, 10]
    assert frame_plan(12, 5, 0) == [0, 1, 2, 3, 4]
    assert frame_plan(10, 300, 2) == [0, 3, 6]
    # With L below the source length the cut still counts source frames: min(5, 12) // 2 = 2 frames, not
    # the 3 that frames[:5][::2] would give.
    assert frame_plan(12, 5, 1) == [0, 2]


def test_fps_is_floored_after_skip():
    assert output_fps(Fraction(24), 1) == 12
    assert output_fps(Fraction(30000, 1001), 1) == 14
    assert output_fps(Fraction(25), 2) == 8


def test_the_probed_clips_are_what_they_claim(clips):
    assert clips["ntsc_audio"].fps == NTSC and clips["ntsc_audio"].has_audio
    assert clips["ntsc_silent"].fps == NTSC and not clips["ntsc_silent"].has_audio


@pytest.mark.parametrize(
    ("clip", "changes", "fps"),
    [
        # With sound the rate is exact, or the audio drifts: 29.97 / 2 = 14.985 fps, not 14.
        ("ntsc_audio", {"skip": 1}, Fraction(15000, 1001)),
        ("ntsc_audio", {"skip": 0}, NTSC),
        ("ntsc_audio", {"skip": 2}, Fraction(10000, 1001)),
        # Without sound (or with keep_audio off) upstream's floored rate is kept.
        ("ntsc_audio", {"skip": 1, "keep_audio": False}, Fraction(14)),
        ("ntsc_silent", {"skip": 1}, Fraction(14)),
        ("ntsc_silent", {"skip": 0}, Fraction(29)),
        # Where floor and exact agree, with sound or not.
        ("pal_audio", {"skip": 4}, Fraction(5)),
        ("pal_audio", {"skip": 1}, Fraction(25, 2)),
    ],
)
def test_output_rate(clips, clip, changes, fps):
    result = plan(clips[clip], **changes)
    assert result.fps == fps and isinstance(result.fps, Fraction)


def test_frame_counts_follow_max_frames_and_skip(clips):
    info = clips["ntsc_audio"]
    assert plan(info, skip=1).count == 10
    assert plan(info, skip=1, max_frames=7).count == 3  # 7 source frames // 2
    assert plan(info, skip=0, max_seconds=0.5).count == 14  # floor(0.5 s * 29.97)
    resampled = plan(info, target_fps=10.0)
    assert (resampled.fps, resampled.skip, resampled.count) == (Fraction(10), 0, 6)  # 20 / 29.97 s * 10


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"width": 64}, "Give both width and height"),
        ({"width": 60, "height": 64}, "multiples of 8"),
        ({"window": 4, "overlap": 4}, "The overlap (4) must be smaller than the window (4)."),
        ({"window": 129, "overlap": 4}, "at most 128 frames"),
        ({"pose_only": True, "pose_video": True}, "turn one of them off"),
        ({"pose_only": True, "save_comparison": True}, "save_comparison needs a generated video"),
        ({"pose_align_mode": "exact"}, "Unknown pose_align_mode 'exact'; use one of fixed, upstream."),
        ({"aspect": "wide"}, "Unknown aspect 'wide'; use one of reference, square."),
    ],
)
def test_check_refuses_what_cannot_run(changes, message):
    with pytest.raises(InputError) as caught:
        request(**changes).check()
    assert message in str(caught.value)


def test_check_accepts_the_defaults_and_an_explicit_size():
    request().check()
    request(width=64, height=48, window=2, overlap=1).check()
