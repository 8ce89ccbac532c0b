"""predictors.common.video on clips generated here with PyAV."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from predictors.common.errors import InputError
from predictors.common.video import VideoWriter, probe, read_frames

AUDIO_RATE = 16000


def level(index: int) -> int:
    """The grey level of frame ``index`` in the generated clips: frames are told apart by brightness."""
    return 16 + 12 * (index % 18)


def make_clip(
    path: Path,
    size=(64, 48),
    frames: int = 12,
    fps=24,
    *,
    times: list[float] | None = None,
    rotation: int | None = None,
    audio_seconds: float | None = None,
    beep_at: float | None = None,
    fmt: str | None = None,
) -> Path:
    """Write a clip whose frame i is grey ``level(i)`` with a white top-left marker. ``times`` gives
    explicit (variable) timestamps in seconds; ``audio_seconds`` adds silent AAC audio, with a tone from
    ``beep_at`` on."""
    width, height = size
    container = av.open(str(path), "w", format=fmt)
    if frames or fmt:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv444p" if width % 2 or height % 2 else "yuv420p"
        time_base = Fraction(1, 1000) if times else Fraction(1, fps)
        stream.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)
    if audio_seconds:
        audio = container.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        t = np.arange(int(audio_seconds * AUDIO_RATE)) / AUDIO_RATE
        signal = np.zeros_like(t, dtype=np.float32)
        if beep_at is not None:
            signal[t >= beep_at] = 0.5 * np.sin(2 * np.pi * 440 * t[t >= beep_at])
    for i in range(frames):
        image = np.full((height, width, 3), level(i), dtype=np.uint8)
        image[: height // 4, : width // 4] = 255
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = round(times[i] * 1000) if times else i
        frame.time_base = time_base
        container.mux(stream.encode(frame))
    if frames:
        container.mux(stream.encode())
    if audio_seconds:
        for start in range(0, len(signal), 1024):
            chunk = av.AudioFrame.from_ndarray(
                signal[None, start : start + 1024], format="fltp", layout="mono"
            )
            chunk.sample_rate, chunk.pts = AUDIO_RATE, start
            container.mux(audio.encode(chunk))
        container.mux(audio.encode())
    container.close()
    return path


def levels(path: Path, **kwargs) -> list[int]:
    """The generated frame index shown by each decoded frame."""
    out = []
    for frame in read_frames(path, **kwargs):
        grey = float(np.median(frame.image[frame.image.shape[0] // 2 :]))
        out.append(round((grey - 16) / 12))
    return out


@pytest.mark.parametrize(
    "size", [(64, 48), (65, 49), (48, 64), (33, 70)], ids=["even", "odd", "portrait", "odd-portrait"]
)
def test_probe_and_decode_sizes(tmp_path, size):
    path = make_clip(tmp_path / "clip.mp4", size=size, frames=6)
    info = probe(path)
    assert (info.width, info.height) == size
    assert info.fps == Fraction(24) and isinstance(info.fps, Fraction)
    assert info.frame_count == 6
    assert info.duration == pytest.approx(6 / 24, abs=1e-3)
    assert not info.has_audio
    frames = list(read_frames(path))
    assert [f.image.shape for f in frames] == [(size[1], size[0], 3)] * 6
    assert all(f.image.dtype == np.uint8 for f in frames)
    assert [f.time for f in frames] == pytest.approx([i / 24 for i in range(6)])
    assert levels(path) == list(range(6))


def test_ntsc_rate_is_an_exact_fraction(tmp_path):
    info = probe(make_clip(tmp_path / "ntsc.mp4", frames=4, fps=Fraction(30000, 1001)))
    assert info.fps == Fraction(30000, 1001)


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_metadata_is_applied(tmp_path, rotation):
    path = make_clip(tmp_path / "rotated.mp4", size=(64, 48), frames=2, rotation=rotation)
    info = probe(path)
    upright = next(read_frames(path)).image
    if rotation == 180:
        assert (info.width, info.height) == (64, 48)
    else:
        assert (info.width, info.height) == (48, 64)
    assert upright.shape == (info.height, info.width, 3)
    # The white marker was top-left in the stored frame; the display matrix turns it counter-clockwise.
    corner = {90: (-1, 0), -90: (0, -1), 180: (-1, -1)}[rotation]
    row = upright.shape[0] - 2 if corner[0] else 1
    column = upright.shape[1] - 2 if corner[1] else 1
    marker = upright[row, column]
    assert marker.min() > 200


def test_variable_frame_rate_becomes_constant_by_timestamps(tmp_path):
    # Frames at 0, 40, 80 ms, then a gap to 200 ms, then a burst at 210 and 215 ms.
    times = [0.0, 0.04, 0.08, 0.2, 0.21, 0.215]
    path = make_clip(tmp_path / "vfr.mp4", frames=len(times), times=times, fps=25)
    frames = list(read_frames(path, target_fps=25))
    # Ticks every 40 ms: 0, 40, 80, 120 and 160 (hold frame 2), 200 (the last of 200/210/215 wins).
    assert levels(path, target_fps=25) == [0, 1, 2, 2, 2, 5]
    assert [f.time for f in frames] == pytest.approx([0, 0.04, 0.08, 0.12, 0.16, 0.2])
    assert frames[3].source_time == pytest.approx(0.08)


def test_skip_and_max_frames(tmp_path):
    path = make_clip(tmp_path / "clip.mp4", frames=12)
    assert levels(path, skip=1) == [0, 2, 4, 6, 8, 10]
    assert levels(path, skip=2, max_frames=3) == [0, 3, 6]
    assert levels(path, max_frames=5) == [0, 1, 2, 3, 4]
    assert levels(path, max_frames=0) == []
    frames = list(read_frames(path, skip=1, max_frames=3))
    assert [f.index for f in frames] == [0, 1, 2]
    assert [f.time for f in frames] == pytest.approx([0, 1 / 12, 2 / 12])  # the output rate is fps / 2
    assert levels(path, target_fps=12) == [0, 2, 4, 6, 8, 10]


def test_has_audio(tmp_path):
    assert probe(make_clip(tmp_path / "a.mp4", frames=6, audio_seconds=0.5)).has_audio


def test_audio_only_file_is_rejected(tmp_path):
    path = make_clip(tmp_path / "audio.m4a", frames=0, audio_seconds=0.5, fmt="mp4")
    with pytest.raises(InputError, match="no video stream"):
        probe(path)
    with pytest.raises(InputError, match="no video stream"):
        list(read_frames(path))


def test_zero_frames_is_rejected(tmp_path):
    path = make_clip(tmp_path / "empty.mkv", frames=0, audio_seconds=0.5, fmt="matroska")
    with pytest.raises(InputError, match="no frames"):
        probe(path)
    with pytest.raises(InputError, match="no frames"):
        list(read_frames(path))


def test_truncated_and_garbage_files_are_rejected(tmp_path):
    whole = make_clip(tmp_path / "whole.mp4", frames=12).read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(whole[: len(whole) // 2])
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    for path in (truncated, garbage):
        with pytest.raises(InputError, match="could not be opened"):
            probe(path)
    with pytest.raises(InputError, match="does not exist"):
        probe(tmp_path / "missing.mp4")


def test_writer_encodes_h264_yuv420p_with_even_size(tmp_path):
    out = tmp_path / "out.mp4"
    with VideoWriter(out, Fraction(24), crf=20) as writer:
        for i in range(10):
            writer.write(np.full((49, 65, 3), level(i), dtype=np.uint8))
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.width, stream.height) == (64, 48)
        assert stream.average_rate == 24
        assert not container.streams.audio
    assert levels(out) == list(range(10))


class Interrupted(BaseException):
    """Stands for a cancellation (Cog raises a BaseException subclass in the predict thread)."""


def test_writer_rejects_a_changed_size_and_cleans_up(tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(ValueError, match="differs"), VideoWriter(out, 24) as writer:
        for i in range(90):
            writer.write(np.full((48, 64, 3), level(i), np.uint8))
        assert out.stat().st_size > 0  # past x264's look-ahead: the muxer has been writing to disk
        writer.write(np.zeros((50, 64, 3), np.uint8))
    assert not out.exists()


@pytest.mark.parametrize("frames", [0, 1, 30], ids=["before-the-first-frame", "after-one", "after-thirty"])
@pytest.mark.parametrize("error", [RuntimeError, Interrupted])
def test_an_error_in_the_with_block_leaves_no_file(tmp_path, frames, error):
    source = make_clip(tmp_path / "src.mp4", frames=48, audio_seconds=2.0)
    out = tmp_path / "out.mp4"
    with pytest.raises(error), VideoWriter(out, 24, audio_source=source) as writer:
        for frame in read_frames(source, max_frames=frames):
            writer.write(frame.image)
        # With 30 frames the muxer has written video and audio packets to disk already.
        assert out.exists() == (frames == 30)
        raise error("stop")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [source]


def test_a_failure_while_finishing_leaves_no_file(tmp_path, monkeypatch):
    source = make_clip(tmp_path / "src.mp4", frames=24, audio_seconds=1.0)
    out = tmp_path / "out.mp4"
    real_pump = VideoWriter._pump_audio

    def pump(self, until, *, final=False):
        if final:
            raise OSError("disk full")
        real_pump(self, until, final=final)

    monkeypatch.setattr(VideoWriter, "_pump_audio", pump)
    with pytest.raises(OSError, match="disk full"), VideoWriter(out, 24, audio_source=source) as writer:
        for frame in read_frames(source):
            writer.write(frame.image)
    assert not out.exists()
    monkeypatch.setattr(VideoWriter, "_pump_audio", real_pump)
    with VideoWriter(out, 24, audio_source=source) as writer:
        for frame in read_frames(source):
            writer.write(frame.image)
    assert probe(out).frame_count == 24


def test_closing_without_frames_is_an_error_and_leaves_no_file(tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(ValueError, match="no frames"), VideoWriter(out, 24):
        pass
    assert not out.exists()


def test_audio_is_trimmed_and_muxed_in_sync(tmp_path):
    source = make_clip(tmp_path / "src.mp4", frames=48, audio_seconds=2.0, beep_at=1.0)
    out = tmp_path / "out.mp4"
    with VideoWriter(out, 24, audio_source=source, audio_start=0.5) as writer:
        for frame in read_frames(source, max_frames=30):
            writer.write(frame.image)
    info = probe(out)
    assert info.has_audio and info.frame_count == 30
    with av.open(str(out)) as container:
        audio = container.streams.audio[0]
        assert audio.codec_context.name == "aac"
        audio_seconds = float(audio.duration * audio.time_base)
        assert audio_seconds == pytest.approx(30 / 24, abs=1 / 24)
        samples = np.concatenate([f.to_ndarray()[0] for f in container.decode(audio)])
    onset = np.argmax(np.abs(samples) > 0.05) / audio.codec_context.sample_rate
    # The tone starts 1.0 s into the source, so 0.5 s into an output that starts at 0.5 s.
    assert onset == pytest.approx(0.5, abs=0.01)


def test_writer_without_audio_in_the_source(tmp_path):
    source = make_clip(tmp_path / "silent.mp4", frames=6)
    out = tmp_path / "out.mp4"
    with VideoWriter(out, 24, audio_source=source) as writer:
        for frame in read_frames(source):
            writer.write(frame.image)
    assert not probe(out).has_audio


def test_writer_with_a_missing_audio_source(tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(InputError, match="does not exist"):
        VideoWriter(out, 24, audio_source=tmp_path / "missing.mp4")
    assert not out.exists()


def test_a_playlist_posing_as_a_video_does_not_read_other_files(tmp_path):
    # FFmpeg's HLS demuxer would follow this playlist to another local file (one of another request, say)
    # and decode it as if it were the upload.
    elsewhere = make_clip(tmp_path / "someone-elses.mp4", frames=4)
    playlist = tmp_path / "input-2.m3u8"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:1.0,\n{elsewhere}\n#EXT-X-ENDLIST\n")
    with pytest.raises(InputError, match="The video could not be opened"):
        probe(playlist)


@pytest.mark.parametrize(
    ("container", "codec", "suffix"),
    [
        ("matroska", "libx264", ".mkv"),
        ("webm", "libvpx-vp9", ".webm"),
        ("avi", "mpeg4", ".avi"),
        ("mov", "libx264", ".mov"),
    ],
)
def test_the_accepted_containers_open(tmp_path, container, codec, suffix):
    path = tmp_path / f"clip{suffix}"
    with av.open(str(path), "w", format=container) as output:
        stream = output.add_stream(codec, rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(3):
            frame = av.VideoFrame.from_ndarray(
                np.full((48, 64, 3), 60 + 10 * index, np.uint8), format="rgb24"
            )
            frame.pts = index
            output.mux(stream.encode(frame))
        output.mux(stream.encode())
    assert probe(path).frame_count == 3
