"""Streaming video input and output with PyAV.

Three entry points:

- ``probe(path) -> VideoInfo``: frame rate (a ``Fraction``), duration, display size, frame count, audio.
  It decodes the first frame, so a file that passes ``probe`` has at least one decodable frame.
- ``read_frames(path, *, skip=0, max_frames=None, target_fps=None) -> Iterator[VideoFrame]``: RGB frames
  one at a time, upright (rotation metadata applied), at a constant frame rate chosen by timestamps.
- ``VideoWriter(path, fps, *, crf=18, audio_source=None, audio_start=0.0)``: a context manager whose
  ``write(rgb)`` encodes H.264 (yuv420p) frame by frame and muxes the audio of ``audio_source`` (from
  ``audio_start`` seconds on, trimmed to the video's length, re-encoded as AAC).

Nothing here holds more than a few frames: memory does not grow with the length of the clip.
Problems with the user's file raise ``InputError`` with a sentence the user can act on.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from predictors.common.errors import InputError
from predictors.common.media import check_size

__all__ = ["VideoFrame", "VideoInfo", "VideoWriter", "probe", "read_frames"]

_AUDIO_RATE_FALLBACK = 44100
# A frame larger than this (about 4K UHD x 2) is refused before the first one is decoded.
MAX_FRAME_PIXELS = 16_000_000
# FFmpeg opens only these demuxers (MP4/MOV, Matroska/WebM, AVI, GIF) and only local files: a playlist or
# concat script posing as a video (HLS, ffconcat) could otherwise make it read other files or URLs.
_OPEN_OPTIONS = {"format_whitelist": "mov,matroska,avi,gif", "protocol_whitelist": "file"}


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe`` learns about a video file. Sizes are as displayed, after rotation."""

    width: int
    height: int
    fps: Fraction
    duration: float
    frame_count: int
    has_audio: bool
    rotation: int


@dataclass(frozen=True)
class VideoFrame:
    """One output frame: ``image`` is uint8 RGB [H, W, 3]; ``time`` is ``index / fps`` of the output timeline,
    ``source_time`` the timestamp (seconds from the first frame) of the decoded frame it shows."""

    index: int
    time: float
    source_time: float
    image: np.ndarray


def _open(path: str | Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"The video file {path.name!r} does not exist.")
    try:
        return av.open(str(path), options=_OPEN_OPTIONS)
    except av.FFmpegError as error:
        raise InputError(
            f"The video could not be opened: it is damaged, truncated or not a video format ({error}). "
            "Upload a complete MP4, MOV, WebM or MKV file."
        ) from error


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    if not container.streams.video:
        kind = "audio only" if container.streams.audio else "no video"
        raise InputError(f"The file has no video stream ({kind}). Upload a video file.")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return stream


def _stream_fps(stream: av.video.stream.VideoStream) -> Fraction | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    return None


def _rotation(frame: av.VideoFrame) -> int:
    """Counter-clockwise display rotation in degrees, a multiple of 90 in [0, 360)."""
    return round(frame.rotation / 90.0) % 4 * 90


def _upright_rgb(frame: av.VideoFrame) -> np.ndarray:
    image = frame.to_ndarray(format="rgb24")
    turns = _rotation(frame) // 90
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def _decode(container: av.container.InputContainer, stream) -> Iterator[av.VideoFrame]:
    """Decoded frames of ``stream``; FFmpeg failures become ``InputError``."""
    try:
        yield from container.decode(stream)
    except av.FFmpegError as error:
        raise InputError(
            f"The video could not be decoded: the data is damaged or truncated ({error}). "
            "Re-export or re-upload the file."
        ) from error


def _frame_time(frame: av.VideoFrame, stream, fallback_index: int, fps: Fraction | None) -> float:
    if frame.pts is not None and stream.time_base is not None:
        return float(frame.pts * stream.time_base)
    return fallback_index / float(fps) if fps else float(fallback_index)


def probe(path: str | Path) -> VideoInfo:
    """Inspect a video file. Raises ``InputError`` for a file without a decodable video frame, or whose
    frames are outside the size limits of ``media.check_size`` (at most ``MAX_FRAME_PIXELS``)."""
    with _open(path) as container:
        stream = _video_stream(container)
        has_audio = bool(container.streams.audio)
        declared = (stream.codec_context.width, stream.codec_context.height)
        if all(declared):
            # From the header, before the decoder allocates a frame of that size.
            check_size(*declared, "video", max_pixels=MAX_FRAME_PIXELS)
        first = next(_decode(container, stream), None)
        if first is None:
            raise InputError("The video has no frames. Upload a video with at least one frame.")
        rotation = _rotation(first)
        width, height = (first.height, first.width) if rotation % 180 else (first.width, first.height)

        frame_count = stream.frames
        if frame_count <= 0:
            container.seek(0)
            frame_count = sum(1 for packet in container.demux(stream) if packet.size)
        fps = _stream_fps(stream)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = frame_count / float(fps) if fps else 0.0
        if fps is None:
            fps = (
                Fraction(frame_count, 1) / Fraction(duration).limit_denominator(1000)
                if duration
                else Fraction(1)
            )
    return VideoInfo(
        width=width,
        height=height,
        fps=fps,
        duration=duration,
        frame_count=frame_count,
        has_audio=has_audio,
        rotation=rotation,
    )


def read_frames(
    path: str | Path,
    *,
    skip: int = 0,
    max_frames: int | None = None,
    target_fps: Fraction | float | None = None,
) -> Iterator[VideoFrame]:
    """Yield upright RGB frames at a constant rate.

    The output timeline ticks at ``target_fps`` (default: the stream's average rate). Tick ``k`` shows the
    last decoded frame whose timestamp, rounded to the nearest tick, is at most ``k``: frames are repeated
    across gaps of a variable-frame-rate file and dropped when they come faster than the rate. On a
    constant-rate file at its own rate every frame appears once, in order.

    ``skip`` then keeps one tick in ``skip + 1`` (so the effective rate is ``fps / (skip + 1)``), and
    ``max_frames`` stops after that many yielded frames. ``VideoFrame.index`` counts yielded frames.

    Over 60 lines because one decode loop and its clock (the tick, the frame on screen) share their state; the
    two closures below keep that state in one place rather than in a class of its own.
    """
    if skip < 0:
        raise ValueError("skip must be >= 0")
    if max_frames is not None and max_frames <= 0:
        return
    with _open(path) as container:
        stream = _video_stream(container)
        fps = Fraction(target_fps).limit_denominator(1_000_000) if target_fps else _stream_fps(stream)
        if fps is None or fps <= 0:
            raise InputError("The video has no usable frame rate. Re-export it with a constant frame rate.")

        tick = 0
        emitted = 0
        start_time: float | None = None
        end_time = 0.0
        # The frame on screen: [source time, decoded frame, its RGB array once converted]. Conversion waits
        # until a tick is really yielded, so dropped and skipped frames cost only their decode.
        held: list | None = None
        out_fps = fps / (skip + 1)

        def advance() -> Iterator[VideoFrame]:
            nonlocal tick, emitted
            if tick % (skip + 1) == 0:
                if held[2] is None:
                    held[2] = _upright_rgb(held[1])
                yield VideoFrame(emitted, emitted / float(out_fps), held[0], held[2])
                emitted += 1
            tick += 1

        def done() -> bool:
            return max_frames is not None and emitted >= max_frames

        for decoded_index, frame in enumerate(_decode(container, stream)):
            time = _frame_time(frame, stream, decoded_index, fps)
            if start_time is None:
                start_time = time
            frame_tick = math.floor((time - start_time) * fps + Fraction(1, 2))
            # Every tick before this frame's own tick shows the frame held so far; within one tick the
            # latest frame wins.
            while held is not None and tick < frame_tick:
                yield from advance()
                if done():
                    return
            held = [time - start_time, frame, None]
            end_time = time - start_time + _frame_duration(frame, stream)
        if start_time is None:
            raise InputError("The video has no frames. Upload a video with at least one frame.")
        # The last frame stays on screen until the end of its own duration.
        last_tick = math.ceil(end_time * fps - Fraction(1, 1000))
        while tick < last_tick and not done():
            yield from advance()


def _frame_duration(frame: av.VideoFrame, stream) -> float:
    if frame.duration and stream.time_base is not None:
        return float(frame.duration * stream.time_base)
    rate = _stream_fps(stream)
    return 1 / float(rate) if rate else 0.0


class VideoWriter:
    """Streaming H.264 writer: ``with VideoWriter(path, fps) as out: out.write(rgb)``.

    Frames are uint8 RGB [H, W, 3], all the same size. An odd width or height is cropped by one pixel,
    because yuv420p needs even dimensions. With ``audio_source``, its first audio stream from
    ``audio_start`` seconds on is re-encoded as AAC, cut to the video's duration, and muxed in step with the
    video; a source without audio is accepted and gives a silent file.
    """

    def __init__(
        self,
        path: str | Path,
        fps: Fraction | float,
        *,
        crf: int = 18,
        audio_source: str | Path | None = None,
        audio_start: float = 0.0,
    ) -> None:
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1_000_000)
        if self.fps <= 0:
            raise ValueError("fps must be positive")
        self.crf = crf
        self.frames_written = 0
        self._video = None
        self._audio_in = _open(audio_source) if audio_source is not None else None
        self._audio_frames: Iterator[av.AudioFrame] | None = None
        self._audio_out = None
        self._fifo: av.AudioFifo | None = None
        self._audio_skip = 0
        self._audio_done = 0
        self._container = av.open(str(self.path), "w", format="mp4")
        if self._audio_in is not None:
            self._attach_audio(audio_start)

    def _attach_audio(self, start: float) -> None:
        if not self._audio_in.streams.audio:
            return
        in_stream = self._audio_in.streams.audio[0]
        rate = in_stream.codec_context.sample_rate or _AUDIO_RATE_FALLBACK
        layout = "stereo" if in_stream.codec_context.layout.nb_channels >= 2 else "mono"
        self._audio_out = self._container.add_stream("aac", rate=rate, layout=layout)
        self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        self._fifo = av.AudioFifo()
        self._audio_frames = self._audio_in.decode(in_stream)
        self._audio_skip = max(0, round(start * rate))

    def _next_audio_frame(self) -> av.AudioFrame | None:
        """The next decoded source audio frame; a damaged audio track just ends there."""
        try:
            return next(self._audio_frames, None)
        except av.FFmpegError:
            self._audio_frames = iter(())
            return None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(flush=exc_type is None)

    def _open_video(self, height: int, width: int) -> None:
        if width < 2 or height < 2:
            raise ValueError(f"frames must be at least 2x2 pixels, got {width}x{height}")
        stream = self._container.add_stream("libx264", rate=self.fps)
        stream.width, stream.height = width - width % 2, height - height % 2
        stream.pix_fmt = "yuv420p"
        stream.time_base = 1 / self.fps
        stream.options = {"crf": str(self.crf)}
        self._video = stream

    def write(self, rgb: np.ndarray) -> None:
        """Encode one uint8 RGB frame [H, W, 3]."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected a uint8 [H, W, 3] RGB array, got {rgb.dtype} {rgb.shape}")
        if self._video is None:
            self._open_video(*rgb.shape[:2])
        height, width = self._video.height, self._video.width
        if rgb.shape[0] - rgb.shape[0] % 2 != height or rgb.shape[1] - rgb.shape[1] % 2 != width:
            raise ValueError(
                f"frame size {rgb.shape[1]}x{rgb.shape[0]} differs from the first {width}x{height}"
            )
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:height, :width]), format="rgb24")
        frame.pts = self.frames_written
        # The muxer may change the stream's time base once the header is written; frames keep 1/fps.
        frame.time_base = 1 / self.fps
        self._container.mux(self._video.encode(frame))
        self.frames_written += 1
        self._pump_audio(self._samples_for(self.frames_written))

    def _samples_for(self, frames: int) -> int:
        return int(frames / self.fps * self._audio_out.rate) if self._audio_out is not None else 0

    def _pump_audio(self, until: int, *, final: bool = False) -> None:
        """Encode source audio up to sample ``until`` of the output timeline, in whole encoder frames;
        ``final`` also encodes the last, shorter frame."""
        if self._audio_out is None:
            return
        frame_size = self._audio_out.codec_context.frame_size or 1024
        while True:
            wanted = min(until - self._audio_done, frame_size)
            if wanted <= 0 or (wanted < frame_size and not final):
                return
            while self._fifo.samples < wanted:
                source = self._next_audio_frame()
                if source is None:
                    break
                for resampled in self._resampler.resample(source):
                    self._feed_fifo(resampled)
            take = min(wanted, self._fifo.samples)
            if take <= 0:
                return
            chunk = self._fifo.read(take)
            chunk.pts = self._audio_done
            chunk.time_base = Fraction(1, self._audio_out.rate)
            self._audio_done += take
            self._container.mux(self._audio_out.encode(chunk))

    def _feed_fifo(self, frame: av.AudioFrame) -> None:
        """Drop the samples before ``audio_start``, then queue the rest."""
        if self._audio_skip >= frame.samples:
            self._audio_skip -= frame.samples
            return
        if self._audio_skip:
            data = frame.to_ndarray()[:, self._audio_skip :]
            trimmed = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(data), format="fltp", layout=frame.layout
            )
            trimmed.sample_rate = frame.sample_rate
            frame, self._audio_skip = trimmed, 0
        frame.pts = None
        self._fifo.write(frame)

    def close(self, flush: bool = True) -> None:
        """Flush the encoders and finish the file. After an error (``flush=False``), or when finishing fails,
        the file is released and deleted: a half-written video is never left behind."""
        if self._container is None:
            return
        finished = False
        try:
            if flush:
                if self._video is None:
                    raise ValueError("no frames were written")
                self._container.mux(self._video.encode())
                if self._audio_out is not None:
                    self._pump_audio(self._samples_for(self.frames_written), final=True)
                    self._container.mux(self._audio_out.encode())
                finished = True
        finally:
            try:
                self._container.close()
            finally:
                self._container = None
                if self._audio_in is not None:
                    self._audio_in.close()
                if not finished:
                    self.path.unlink(missing_ok=True)
