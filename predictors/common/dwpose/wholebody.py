"""The whole-body pipeline on ONNX Runtime sessions (``predictors.common.onnx``): detector, then poses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from predictors.common.dwpose.detector import Detections, detect
from predictors.common.dwpose.estimator import PoseEstimator
from predictors.common.dwpose.keypoints import Pose, to_openpose
from predictors.common.onnx import create_session


def resize_for_detection(image: np.ndarray, resolution: int = 512) -> np.ndarray:
    """MusePose's detector-input resize: the short side to ``resolution``, then both sides rounded to a
    multiple of 64 (Lanczos when enlarging, area averaging when shrinking). Normalised keypoints barely
    depend on it, but the rounding changes the aspect slightly, and upstream's keypoints carry that."""
    height, width = image.shape[:2]
    k = resolution / min(height, width)
    new_h, new_w = int(np.round(height * k / 64.0)) * 64, int(np.round(width * k / 64.0)) * 64
    interpolation = cv2.INTER_LANCZOS4 if k > 1 else cv2.INTER_AREA
    return cv2.resize(image, (new_w, new_h), interpolation=interpolation)


@dataclass(frozen=True)
class PoseResult:
    """People found in one image: ``keypoints`` [P,133,2] pixels and ``scores`` [P,133] in COCO-WholeBody
    order, one row per detected box; with no box, one row for the whole image (``detections`` is then
    empty)."""

    detections: Detections
    keypoints: np.ndarray
    scores: np.ndarray
    width: int
    height: int

    def openpose(self) -> tuple[np.ndarray, np.ndarray]:
        """[P,134,2] pixels and [P,134] scores in OpenPose order (see ``keypoints``)."""
        return to_openpose(self.keypoints, self.scores)

    def pose(self, *, first_person_only: bool = False) -> Pose:
        """Normalised ``Pose``; ``first_person_only`` keeps the highest-scoring person."""
        keypoints, scores = self.openpose()
        if first_person_only:
            keypoints, scores = keypoints[:1], scores[:1]
        return Pose.from_openpose(keypoints, scores, self.width, self.height)


class Wholebody:
    """YOLOX + DWPose. ``rules`` is ``"mmpose"`` (MusePose's detector thresholds and the flip test) or
    ``"controlnet"`` (DWPose's ONNX thresholds, no flip test); see ``detector`` and ``estimator``."""

    def __init__(
        self,
        detector_path: str | Path,
        pose_path: str | Path,
        *,
        rules: str = "mmpose",
        providers: list[str] | None = None,
        max_batch: int = 16,
    ) -> None:
        if rules not in ("mmpose", "controlnet"):
            raise ValueError(f"unknown rules {rules!r}")
        self.rules = rules
        self.detector = create_session(detector_path, providers)
        self.estimator = PoseEstimator(create_session(pose_path, providers), max_batch=max_batch)

    @property
    def flip_test(self) -> bool:
        return self.rules == "mmpose"

    def __call__(self, image_rgb: np.ndarray) -> PoseResult:
        return self.batch([image_rgb])[0]

    def batch(self, images_rgb: list[np.ndarray]) -> list[PoseResult]:
        """Detect every image, then estimate all their people in shared network calls."""
        detections = [detect(self.detector, image, self.rules) for image in images_rgb]
        items = []
        for image, found in zip(images_rgb, detections, strict=True):
            height, width = image.shape[:2]
            boxes = found.boxes if len(found.boxes) else np.array([[0, 0, width, height]])
            items.append((image, boxes))
        estimates = self.estimator.estimate(items, flip=self.flip_test)
        return [
            PoseResult(found, keypoints, scores, image.shape[1], image.shape[0])
            for image, found, (keypoints, scores) in zip(images_rgb, detections, estimates, strict=True)
        ]
