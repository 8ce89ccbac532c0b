"""Cog predictor: MusePose, a photo of a person + a dance video -> a video of that person dancing."""

from __future__ import annotations

import os

from cog import BaseModel, BasePredictor, Input, Path

from predictors.common import boundary, media, runtime, weights
from predictors.common.dwpose import DETECTOR_WEIGHTS, POSE_WEIGHTS, Wholebody
from predictors.musepose import convert
from predictors.musepose.animate import Animator, Request
from predictors.musepose.distributed import load_pipeline

# load_pipeline's parts by manifest name: files, and the folders diffusers loads the VAE and encoder from.
PIPELINE_FILES = {
    "unet_config": "musepose_unet_config",
    "denoising_unet": "musepose_denoising_unet_compact",
    "motion_module": "musepose_motion_module_compact",
    "reference_unet": "musepose_reference_unet_compact",
    "pose_guider": "musepose_pose_guider_compact",
}
PIPELINE_FOLDERS = {"vae": "sd_vae_ft_mse", "image_encoder": "sd_image_variations_image_encoder"}
OOM_REMEDY = "Lower the resolution, the window (for example 24) or max_frames, and try again."

logger = runtime.get_logger("musepose")


def ensure_weights() -> weights.Weights:
    """MusePose's files, the released checkpoints converted once to the compact files the pipeline loads."""
    return weights.ensure("musepose", conversions={"musepose_compact": convert.convert_release})


def pipeline_files(files: weights.Weights) -> dict[str, Path]:
    """The paths ``load_pipeline`` takes, by part."""
    return {part: files[name] for part, name in PIPELINE_FILES.items()} | {
        part: files.folder(name) for part, name in PIPELINE_FOLDERS.items()
    }


class Output(BaseModel):
    """The output files by name; a field is None when its file was not asked for.

    video: the generated video (None in pose_only mode). pose_video: the pose video that drives the generation
    (save_aligned_pose or pose_only). pose_preview: pose_video's first frame as a PNG, to judge the alignment
    at a glance. comparison: reference | pose | result side by side (save_comparison).
    """

    video: Path | None = None
    pose_video: Path | None = None
    pose_preview: Path | None = None
    comparison: Path | None = None


class Predictor(BasePredictor):
    def setup(self) -> None:
        files = ensure_weights()
        runtime.configure_threads()
        self.device = runtime.select_device()
        dtype = runtime.select_dtype(self.device)
        # Several GPUs: worker processes share the denoising (predictors/musepose/distributed.py).
        pipeline = load_pipeline(pipeline_files(files), self.device, dtype, logger)
        pose_model = Wholebody(files[DETECTOR_WEIGHTS], files[POSE_WEIGHTS], rules="musepose")
        self.animator = Animator(pipeline, pose_model, logger)
        self.outputs = media.Outputs()

    def healthcheck(self) -> bool:
        return runtime.device_works(self.device)

    @boundary.prediction
    def predict(
        self,
        reference_image: Path = Input(
            description="Photo of the person to animate (one person, ideally full body)."
        ),
        dance_video: Path = Input(
            description="The dance to perform: a video of one dancer (its audio is kept)."
        ),
        width: int = Input(
            description="Generation width in pixels (a multiple of 8). 0: from the reference's aspect and resolution. Set width and height for upstream's exact behaviour.",  # noqa: E501
            default=0,
            ge=0,
            le=2048,
        ),
        height: int = Input(
            description="Generation height in pixels (a multiple of 8); 0: automatic.",
            default=0,
            ge=0,
            le=2048,
        ),
        resolution: int = Input(
            description="Longer side of the generation size when width and height are 0.",
            default=768,
            ge=64,
            le=1536,
        ),
        aspect: str = Input(
            description="'reference' keeps the reference's aspect ratio; 'square' generates resolution x resolution like upstream MusePose (the output is resized back either way).",  # noqa: E501
            default="reference",
            choices=["reference", "square"],
        ),
        max_frames: int = Input(
            description="Use at most this many frames of the dance video, counted before the stride (upstream's -L).",  # noqa: E501
            default=300,
            ge=1,
            le=3000,
        ),
        max_seconds: float = Input(
            description="Use at most this many seconds of the dance video; 0: no limit.",
            default=0.0,
            ge=0.0,
            le=600.0,
        ),
        skip: int = Input(
            description="Frame stride: keep one frame in skip + 1 (upstream's --skip); the output runs at the video's frame rate // (skip + 1).",  # noqa: E501
            default=1,
            ge=0,
            le=10,
        ),
        target_fps: float = Input(
            description="Resample the dance video to this frame rate instead of striding with skip; 0: use skip. max_frames then counts frames at this rate.",  # noqa: E501
            default=0.0,
            ge=0.0,
            le=60.0,
        ),
        num_inference_steps: int = Input(description="DDIM denoising steps.", default=20, ge=1, le=100),
        guidance_scale: float = Input(
            description="Classifier-free guidance scale; 1 turns guidance off (half the work).",
            default=3.5,
            ge=1.0,
            le=20.0,
        ),
        seed: int | None = Input(description="Random seed; empty draws one (it is logged).", default=None),
        window: int = Input(
            description="Frames generated together (upstream's -S); lower it to save GPU memory.",
            default=48,
            ge=2,
            le=128,
        ),
        overlap: int = Input(
            description="Frames shared by consecutive windows (upstream's -O); smaller than window.",
            default=4,
            ge=0,
            le=127,
        ),
        align_pose: bool = Input(
            description="Retarget the dancer's skeleton to the reference's body proportions and position (MusePose's pose_align). Off: the dancer's own skeleton in the video's framing.",  # noqa: E501
            default=True,
        ),
        pose_align_mode: str = Input(
            description="'fixed' aligns like MusePose's pose_align with its bugs fixed (the same result wherever they do not bite); 'upstream' reproduces MusePose's pose_align exactly, bugs included.",  # noqa: E501
            default="fixed",
            choices=["fixed", "upstream"],
        ),
        pose_video: bool = Input(
            description="The dance video already is a pose video (for example a previous aligned-pose output): skip detection and alignment and use its frames as the poses.",  # noqa: E501
            default=False,
        ),
        save_aligned_pose: bool = Input(
            description="Also return the pose video that drove the generation (pose_video) and its first frame (pose_preview).",  # noqa: E501
            default=False,
        ),
        save_comparison: bool = Input(
            description="Also return a side-by-side video: reference | pose | result.", default=False
        ),
        keep_audio: bool = Input(description="Copy the dance video's audio into the outputs.", default=True),
        pose_only: bool = Input(
            description="Only detect and align the poses, in seconds: returns pose_video and pose_preview and generates no video, to check the alignment before a long run.",  # noqa: E501
            default=False,
        ),
    ) -> Output:
        self.outputs.start()
        request = Request(
            reference=reference_image,
            dance_video=dance_video,
            seed=runtime.resolve_seed(seed, logger),
            width=width,
            height=height,
            resolution=resolution,
            square=aspect == "square",
            max_frames=max_frames,
            max_seconds=max_seconds,
            skip=skip,
            target_fps=target_fps,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            window=window,
            overlap=overlap,
            align_pose=align_pose,
            pose_align_mode=pose_align_mode,
            pose_video=pose_video,
            save_aligned_pose=save_aligned_pose,
            save_comparison=save_comparison,
            keep_audio=keep_audio,
            pose_only=pose_only,
        )
        with runtime.oom_guard(OOM_REMEDY):
            result = self.animator.run(request, self.outputs)
        logger.info("Wrote %d frames at %s fps (%dx%d).", result.frames, result.fps, *result.size)
        return Output(
            video=optional_path(result.video),
            pose_video=optional_path(result.pose_video),
            pose_preview=optional_path(result.pose_preview),
            comparison=optional_path(result.comparison),
        )


def optional_path(path: os.PathLike[str] | None) -> Path | None:
    return None if path is None else Path(path)
