"""DWPose on ONNX Runtime: YOLOX person detection, SimCC whole-body keypoints, OpenPose formats and
skeleton rendering.

    from predictors.common.dwpose import Wholebody, render_pose
    model = Wholebody(root / "dwpose/yolox_l.onnx", root / "dwpose/dw-ll_ucoco_384.onnx", rules="musepose")
    result = model(rgb_uint8)                 # PoseResult: boxes, 133 keypoints per person, scores
    pose = result.pose(first_person_only=True)  # normalised OpenPose layout (Pose)
    canvas = render_pose(pose, height, width, style="musepose")
"""

from predictors.common.dwpose.keypoints import Pose, to_openpose
from predictors.common.dwpose.render import render_pose
from predictors.common.dwpose.session import (
    PoseResult,
    Wholebody,
    resize_for_detection,
)

DETECTOR_FILE = "dwpose/yolox_l.onnx"
POSE_FILE = "dwpose/dw-ll_ucoco_384.onnx"

__all__ = [
    "DETECTOR_FILE",
    "POSE_FILE",
    "Pose",
    "PoseResult",
    "Wholebody",
    "render_pose",
    "resize_for_detection",
    "to_openpose",
]
