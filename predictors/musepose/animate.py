"""The whole MusePose chain, without Cog: reference photo + dance video -> video of that person dancing.

1. Frames: the dance video is read as a stream; upstream's frame bookkeeping picks the used frames (at most
   ``max_frames`` source frames, one in ``skip + 1``), and the output rate is the source rate // (skip + 1).
2. Poses: DWPose on the reference and on every used frame, then MusePose's pose alignment to the reference's
   proportions, rendered at the reference's aspect. A frame where nobody is found repeats the nearest pose
   that was found (and the log says which frames). In pose-video mode the frames already are pose images and
   are used as they are.
3. Generation (``pipeline.MusePosePipeline``) at the generation size, then each decoded frame is resized back
   to the pose frames' size and streamed into the H.264 writer together with the dance video's audio.

In pose-only mode the chain stops after step 2: the pose video and its first frame are written and no network
of the generation is run, so a user can check the detection and the alignment in seconds.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from predictors.common import video
from predictors.common.dwpose import Pose, Wholebody, resize_for_detection
from predictors.common.errors import InputError
from predictors.common.media import Outputs, check_input_path, load_image
from predictors.common.runtime import StepCallback, progress_bar
from predictors.musepose.models.config import MAX_WINDOW
from predictors.musepose.pipeline import (
    VAE_FACTOR,
    MusePosePipeline,
    pad_poses,
    resize_horizontal_first,
    resize_poses,
    to_output_frames,
)
from predictors.musepose.pose_align import align_poses, pose_frame_size, render_frames, render_poses

DETECTION_BATCH = 16
DECODE_CHUNK = 4
# Below this the UNet's deepest level is left with a single value per normalisation group (GroupNorm fails
# at 8 and 16 px); MusePose is trained at 512-768 px, so nothing this small is useful anyway.
MIN_GENERATION_SIDE = 32
# "fixed": upstream's pose alignment with its bugs fixed (see pose_align.py); "upstream": exactly upstream's.
POSE_ALIGN_MODES = ("fixed", "upstream")
ASPECTS = ("reference", "square")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    """One MusePose job, under the API's input names; the defaults are the predictor's ``Input`` ones.

    ``width``/``height`` 0: from ``resolution`` and the pose frames' aspect (or square, ``aspect``)."""

    reference_image: Path
    dance_video: Path
    width: int
    height: int
    resolution: int
    aspect: str
    max_frames: int
    max_seconds: float
    skip: int
    target_fps: float
    num_inference_steps: int
    guidance_scale: float
    seed: int
    window: int
    overlap: int
    align_pose: bool
    pose_align_mode: str
    pose_video: bool
    save_aligned_pose: bool
    save_comparison: bool
    keep_audio: bool
    pose_only: bool

    def check(self) -> None:
        """Raise InputError for a request that cannot run, before any file is read."""
        if self.width or self.height:
            if not (self.width and self.height):
                raise InputError(
                    "Give both width and height, or leave both at 0 to follow the reference's aspect."
                )
            if self.width % VAE_FACTOR or self.height % VAE_FACTOR:
                raise InputError(f"Width and height must be multiples of {VAE_FACTOR}.")
        if self.overlap >= self.window:
            raise InputError(f"The overlap ({self.overlap}) must be smaller than the window ({self.window}).")
        if self.window > MAX_WINDOW:
            raise InputError(f"The window can hold at most {MAX_WINDOW} frames (the motion modules' range).")
        if self.pose_only and self.pose_video:
            raise InputError(
                "pose_only extracts the poses of a dance video, but pose_video says it already is one: "
                "turn one of them off."
            )
        if self.pose_only and self.save_comparison:
            raise InputError(
                "save_comparison needs a generated video, which pose_only skips: turn one of them off."
            )
        for name, value, allowed in (
            ("pose_align_mode", self.pose_align_mode, POSE_ALIGN_MODES),
            ("aspect", self.aspect, ASPECTS),
        ):
            if value not in allowed:
                raise InputError(f"Unknown {name} {value!r}; use one of {', '.join(allowed)}.")


@dataclass(frozen=True)
class FrameSelection:
    """The dance video's frames to read (``count`` at one in ``skip + 1``, or resampled to ``rate``) and the
    output ``fps``."""

    count: int
    skip: int
    rate: Fraction | None
    fps: Fraction


@dataclass(frozen=True)
class PoseFrames:
    """The pose frames of a run: their video and first frame (None: not asked for), their size, the frames
    resized to the generation size (None in pose-only mode) and how many there are."""

    video: Path | None
    preview: Path | None
    size: tuple[int, int]
    resized: np.ndarray | None
    count: int


@dataclass(frozen=True)
class Animation:
    """The files written (None: not asked for; ``video`` is None in pose-only mode) and the video's facts."""

    video: Path | None
    pose_video: Path | None
    pose_preview: Path | None
    comparison: Path | None
    frames: int
    fps: Fraction
    size: tuple[int, int]


def generation_size(request: Request, aspect_size: tuple[int, int]) -> tuple[int, int]:
    """(width, height), multiples of 8: explicit, square, or the pose frames' aspect with the long side at
    ``resolution``; each side at least MIN_GENERATION_SIDE."""
    if request.width:
        size = (request.width, request.height)
    elif request.aspect == "square":
        side = request.resolution // VAE_FACTOR * VAE_FACTOR
        size = (side, side)
    else:
        width, height = aspect_size
        scale = request.resolution / max(width, height)
        size = tuple(
            max(VAE_FACTOR, round(side * scale / VAE_FACTOR) * VAE_FACTOR) for side in (width, height)
        )
    if min(size) < MIN_GENERATION_SIDE:
        raise InputError(
            f"The generation size would be {size[0]}x{size[1]} pixels; each side must be at least "
            f"{MIN_GENERATION_SIDE}. Raise width and height or resolution, or use a less elongated picture."
        )
    return size


# ----------------------------------------------------------------------------------------------------------
# Frame selection: upstream's bookkeeping (test_stage_2.py) as pure functions, then the rate rules.


def frame_plan(source_frames: int, max_frames: int, skip: int) -> list[int]:
    """Source indices used: every (skip+1)-th frame, ``min(max_frames, source_frames) // (skip+1)`` in all."""
    length = min(max_frames, source_frames) // (skip + 1)
    return list(range(0, source_frames, skip + 1))[:length]


def output_fps(source_fps, skip: int) -> int:
    """Upstream's fps: the source average rate floor-divided by (skip+1) (a Fraction floors to an int)."""
    return int(source_fps // (skip + 1))


def select_frames(request: Request, info: video.VideoInfo) -> FrameSelection:
    """Which frames the run reads and the output rate: upstream's L and fps, or a resampled rate."""
    if request.target_fps:
        return _resampled(request, info)
    limit = request.max_frames
    if request.max_seconds:
        limit = min(limit, max(1, math.floor(request.max_seconds * info.fps)))
    count = len(frame_plan(info.frame_count, limit, request.skip))
    if count == 0 and info.frame_count > limit:
        raise InputError(
            f"max_frames and max_seconds leave {limit} frame(s) of the dance video, which give no frame "
            f"at one in {request.skip + 1}. Raise max_frames or max_seconds, or lower skip."
        )
    if count == 0:
        raise InputError(
            f"The dance video is too short: {info.frame_count} frame(s) give no frame at one in "
            f"{request.skip + 1}. Lower skip or use a longer video."
        )
    if info.frame_count > limit:
        log.info(
            "The dance video has %d frames; only the first %d are used (max_frames / max_seconds).",
            info.frame_count,
            limit,
        )
    fps = Fraction(output_fps(info.fps, request.skip))
    exact = info.fps / (request.skip + 1)
    if fps <= 0 or (request.keep_audio and info.has_audio and fps != exact):
        # Upstream floors the rate; with sound that would drift, so the exact rate is kept.
        log.info("Writing at the exact rate %.3f fps (not %d) so that the audio stays in sync.", exact, fps)
        fps = exact
    return FrameSelection(count=count, skip=request.skip, rate=None, fps=fps)


def _resampled(request: Request, info: video.VideoInfo) -> FrameSelection:
    rate = Fraction(request.target_fps).limit_denominator(1001)
    available = max(1, math.floor(info.duration * rate + 1e-6))
    count = min(request.max_frames, available)
    if request.max_seconds:
        count = min(count, max(1, math.floor(request.max_seconds * rate)))
    if available > count:
        log.info(
            "The dance video gives %d frames at %s fps; only the first %d are used.", available, rate, count
        )
    return FrameSelection(count=count, skip=0, rate=rate, fps=rate)


class Animator:
    """Holds the loaded pipeline and pose model; ``run`` serves one request."""

    def __init__(self, pipeline: MusePosePipeline, pose_model: Wholebody):
        self.pipeline = pipeline
        self.pose_model = pose_model

    # -- frames ------------------------------------------------------------------------------------------

    def _frames(self, request: Request, selection: FrameSelection) -> Iterator[np.ndarray]:
        frames = video.read_frames(
            request.dance_video, skip=selection.skip, max_frames=selection.count, target_fps=selection.rate
        )
        for frame in frames:
            yield frame.image

    # -- poses -------------------------------------------------------------------------------------------

    def _reference_pose(self, reference: Image.Image) -> Pose:
        result = self.pose_model(resize_for_detection(np.asarray(reference)))
        if not len(result.detections.boxes):
            raise InputError(
                "No person was found in the reference image. "
                "Use a photo where one person is clearly visible, ideally full body."
            )
        return result.pose(first_person_only=True)

    def _video_poses(self, request: Request, selection: FrameSelection) -> tuple[list[Pose], tuple[int, int]]:
        poses: list[Pose | None] = []
        size = (0, 0)
        batch: list[np.ndarray] = []

        with progress_bar(selection.count, unit="frame") as bar:

            def flush() -> None:
                for result in self.pose_model.batch(batch):
                    found = len(result.detections.boxes) > 0
                    poses.append(result.pose(first_person_only=True) if found else None)
                bar.update(len(batch))
                batch.clear()

            for image in self._frames(request, selection):
                size = (image.shape[1], image.shape[0])
                # Upstream detects on a copy resized to 512 on the short side; the keypoints are normalised.
                batch.append(resize_for_detection(image))
                if len(batch) == DETECTION_BATCH:
                    flush()
            if batch:
                flush()
        log.info("Detected the dancer's pose in %d frames.", len(poses))
        return _fill_missing(poses), size

    def _pose_frames(
        self, request: Request, reference: Image.Image, selection: FrameSelection
    ) -> Iterator[np.ndarray]:
        """uint8 RGB pose frames at the pose size; the detection happens before the first frame is yielded."""
        if request.pose_video:
            yield from self._frames(request, selection)
            return
        reference_pose = self._reference_pose(reference)
        poses, video_size = self._video_poses(request, selection)
        if request.align_pose:
            parity = request.pose_align_mode == "upstream"
            aligned = align_poses(reference_pose, poses, reference.size, video_size, parity=parity)
            log.info("Pose alignment scales: %s", {k: round(float(v), 3) for k, v in aligned.scales.items()})
            yield from render_frames(aligned)
        else:
            yield from render_poses(poses, video_size, pose_frame_size(video_size))

    # -- the run -----------------------------------------------------------------------------------------

    def run(self, request: Request, outputs: Outputs, on_step: StepCallback | None = None) -> Animation:
        """Serve ``request``, writing into ``outputs``; ``on_step`` gets the denoising's ``Progress``."""
        request.check()
        reference = load_image(request.reference_image, what="reference image")
        check_input_path(request.dance_video, "dance video")
        info = video.probe(request.dance_video)
        selection = select_frames(request, info)
        log.info("Using %d frames of %d, output at %s fps.", selection.count, info.frame_count, selection.fps)
        poses = self._collect_poses(request, reference, selection, outputs)
        if request.pose_only:
            log.info("Pose only: %d pose frames written, nothing generated.", poses.count)
            return Animation(None, poses.video, poses.preview, None, poses.count, selection.fps, poses.size)
        return self._generate(request, reference, poses, selection.fps, info.has_audio, outputs, on_step)

    def _collect_poses(
        self, request: Request, reference: Image.Image, selection: FrameSelection, outputs: Outputs
    ) -> PoseFrames:
        """The pose frames, written out when asked for and kept only at the generation size (memory follows
        the generation size, not the pose frames' size)."""
        keep = request.save_aligned_pose or request.pose_only
        video_path = outputs.new_path("aligned-pose", ".mp4") if keep else None
        preview, size, generation, resized, count = None, None, None, [], 0
        with _maybe_writer(video_path, selection.fps) as writer:
            for frame in self._pose_frames(request, reference, selection):
                count += 1
                if size is None:
                    size = (frame.shape[1], frame.shape[0])
                    if keep:
                        preview = outputs.save_image(Image.fromarray(frame), "pose-preview")
                    if not request.pose_only:
                        generation = generation_size(request, size)
                if writer is not None:
                    writer.write(frame)
                if generation is not None:
                    resized.append(resize_poses([frame], *generation)[0])
        return PoseFrames(video_path, preview, size, np.stack(resized) if resized else None, count)

    def _generate(
        self,
        request: Request,
        reference: Image.Image,
        poses: PoseFrames,
        fps: Fraction,
        has_audio: bool,
        outputs: Outputs,
        on_step: StepCallback | None,
    ) -> Animation:
        """Generate at the generation size, then stream each frame resized back to the pose size."""
        frames, (width, height) = len(poses.resized), poses.resized.shape[2:0:-1]
        log.info("Generating %dx%d, resized back to %dx%d.", width, height, *poses.size)
        encoding = self.pipeline.encode_reference(reference, width, height)
        latents = self.pipeline.denoise(
            pad_poses(poses.resized, request.window, request.overlap),
            encoding,
            steps=request.num_inference_steps,
            guidance=request.guidance_scale,
            window=request.window,
            overlap=request.overlap,
            generator=torch.Generator().manual_seed(request.seed),
            on_step=on_step,
        )
        video_path = outputs.new_path("musepose", ".mp4")
        comparison_path = outputs.new_path("comparison", ".mp4") if request.save_comparison else None
        audio = request.dance_video if request.keep_audio and has_audio else None
        reference_panel = np.asarray(resize_horizontal_first(reference, poses.size, Image.LANCZOS))
        written = 0
        with (
            video.VideoWriter(video_path, fps, audio_source=audio) as writer,
            _maybe_writer(comparison_path, fps, audio) as comparison,
        ):
            for chunk in self.pipeline.decode(latents, DECODE_CHUNK):
                for frame in to_output_frames(chunk, poses.size)[: frames - written]:
                    writer.write(frame)
                    if comparison is not None:
                        pose = cv2.resize(poses.resized[written], poses.size, interpolation=cv2.INTER_LINEAR)
                        comparison.write(np.concatenate([reference_panel, pose, frame], axis=1))
                    written += 1
        return Animation(video_path, poses.video, poses.preview, comparison_path, written, fps, poses.size)


def _maybe_writer(path: Path | None, fps: Fraction, audio: Path | None = None):
    """A writer for an optional output, or a context giving None when the output was not asked for."""
    return video.VideoWriter(path, fps, audio_source=audio) if path is not None else contextlib.nullcontext()


def _fill_missing(poses: list[Pose | None]) -> list[Pose]:
    """Frames without a person take the nearest earlier pose (the first found one at the start)."""
    missing = [index for index, pose in enumerate(poses) if pose is None]
    if len(missing) == len(poses):
        raise InputError(
            "No person was found in the dance video. Use a video where the dancer's whole body is visible."
        )
    if missing:
        log.warning(
            "No dancer found in %d of %d frames (%s); they repeat the nearest pose found.",
            len(missing),
            len(poses),
            _ranges(missing),
        )
    first = next(pose for pose in poses if pose is not None)
    filled, last = [], first
    for pose in poses:
        last = pose if pose is not None else last
        filled.append(last)
    return filled


def _ranges(indices: list[int]) -> str:
    spans, start = [], indices[0]
    for previous, current in zip(indices, [*indices[1:], None], strict=True):
        if current != previous + 1:
            spans.append(str(start) if start == previous else f"{start}-{previous}")
            start = current
    return ", ".join(spans)
