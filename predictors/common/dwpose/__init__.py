"""DWPose on ONNX Runtime: YOLOX person detection, SimCC whole-body keypoints, OpenPose formats and
skeleton rendering.

    from predictors.common.dwpose import Wholebody, render_pose
    files = weights.ensure(...)               # a target whose files include DETECTOR_WEIGHTS and POSE_WEIGHTS
    model = Wholebody(files[DETECTOR_WEIGHTS], files[POSE_WEIGHTS], rules="mmpose")
    result = model(rgb_uint8)                 # PoseResult: boxes, 133 keypoints per person, scores
    pose = result.pose(first_person_only=True)  # normalised OpenPose layout (Pose)
    canvas = render_pose(pose, height, width, style="scaled")
"""

from predictors.common.dwpose.keypoints import Pose, to_openpose
from predictors.common.dwpose.render import render_pose
from predictors.common.dwpose.wholebody import (
    PoseResult,
    Wholebody,
    resize_for_detection,
)

# The two networks' names in the weights manifest.
DETECTOR_WEIGHTS = "dwpose_yolox_l"
POSE_WEIGHTS = "dwpose_dw_ll_ucoco_384"

__all__ = [
    "DETECTOR_WEIGHTS",
    "POSE_WEIGHTS",
    "Pose",
    "PoseResult",
    "Wholebody",
    "render_pose",
    "resize_for_detection",
    "to_openpose",
]
