"""Keypoint formats: 133-point COCO-WholeBody, its 134-point OpenPose ordering, and the normalised pose.

COCO-WholeBody (what the pose network predicts): 0-16 body (COCO order), 17-22 feet, 23-90 face (68
points), 91-111 left hand, 112-132 right hand. "Left" is the person's left.

OpenPose-134 (what DWPose consumers use): a neck is inserted at 17 (mean of the shoulders; its score is 1
when both shoulder scores are above 0.3, else 0), then the first 18 rows are re-ordered to OpenPose-18:
0 nose, 1 neck, 2 right shoulder, 3 right elbow, 4 right wrist, 5 left shoulder, 6 left elbow, 7 left
wrist, 8 right hip, 9 right knee, 10 right ankle, 11 left hip, 12 left knee, 13 left ankle, 14 right eye,
15 left eye, 16 right ear, 17 left ear; then 18-23 feet, 24-91 face, 92-112 left hand, 113-133 right hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VISIBLE = 0.3

# Left/right partner of every COCO-WholeBody point, used by the flip test.
_BODY_FLIP = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
_FEET_FLIP = [20, 21, 22, 17, 18, 19]
# iBUG-68 face: jaw 0-16 mirrors, brows 17-21 <-> 26-22, nose bridge 27-30 central, nostrils 31-35 mirror,
# eyes 36-41 <-> 45-42 (with 40/41 <-> 47/46), outer lips 48-54 and 55-59 mirror, inner lips 60-64 and 65-67.
_FACE_FLIP = (
    list(range(16, -1, -1))
    + list(range(26, 16, -1))
    + [27, 28, 29, 30]
    + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]
    + [64, 63, 62, 61, 60, 67, 66, 65]
)
FLIP_INDICES = np.array(
    _BODY_FLIP + _FEET_FLIP + [23 + i for i in _FACE_FLIP] + list(range(112, 133)) + list(range(91, 112)),
    dtype=np.int64,
)

# COCO-WholeBody (after the neck insertion at 17) -> OpenPose-18 rows.
_MMPOSE_ROWS = [17, 6, 8, 10, 7, 9, 12, 14, 16, 13, 15, 2, 1, 4, 3]
_OPENPOSE_ROWS = [1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17]

FEET = slice(18, 24)
FACE = slice(24, 92)
LEFT_HAND = slice(92, 113)
RIGHT_HAND = slice(113, 134)


def to_openpose(keypoints: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[P,133,2] pixels + [P,133] scores (COCO-WholeBody) -> [P,134,2] + [P,134] (OpenPose order)."""
    info = np.concatenate([keypoints, scores[..., None]], axis=-1)
    neck = info[:, [5, 6]].mean(axis=1)
    neck[:, 2] = np.logical_and(info[:, 5, 2] > VISIBLE, info[:, 6, 2] > VISIBLE).astype(int)
    info = np.insert(info, 17, neck, axis=1)
    info[:, _OPENPOSE_ROWS] = info[:, _MMPOSE_ROWS]
    return info[..., :2], info[..., 2]


@dataclass
class Pose:
    """One image's people in normalised coordinates (x / width, y / height), in the layout DWPose consumers
    (ControlNet, MusePose) pass around.

    - ``candidate`` [18P, 2]: body points of person i in rows 18i..18i+17, raw even when not visible;
    - ``subset`` [P, 18]: the candidate row of each body point when its score > 0.3, else -1;
    - ``hands`` [2P, 21, 2]: the left hands of all people, then their right hands; -1 where score < 0.3;
    - ``faces`` [P, 68, 2] and ``feet`` [P, 6, 2]: same rule.
    """

    candidate: np.ndarray
    subset: np.ndarray
    hands: np.ndarray
    faces: np.ndarray
    feet: np.ndarray

    @classmethod
    def from_openpose(cls, keypoints: np.ndarray, scores: np.ndarray, width: int, height: int) -> Pose:
        """From [P,134,2] pixel keypoints and [P,134] scores of an image of ``width`` x ``height``."""
        points = np.array(keypoints, dtype=np.float64)
        people = points.shape[0]
        points[..., 0] /= float(width)
        points[..., 1] /= float(height)
        candidate = points[:, :18].reshape(people * 18, 2).copy()
        body_scores = scores[:, :18]
        rows = 18 * np.arange(people)[:, None] + np.arange(18)[None, :]
        subset = np.where(body_scores > VISIBLE, rows, -1).astype(np.float64)
        hidden = scores < VISIBLE
        points[hidden] = -1
        return cls(
            candidate=candidate,
            subset=subset,
            hands=np.concatenate([points[:, LEFT_HAND], points[:, RIGHT_HAND]], axis=0),
            faces=points[:, FACE],
            feet=points[:, FEET],
        )

    @property
    def people(self) -> int:
        return self.subset.shape[0]

    def person_hands(self, person: int) -> np.ndarray:
        """[2, 21, 2]: that person's own left and right hand."""
        return self.hands[[person, self.people + person]]

    @classmethod
    def from_dict(cls, data: dict) -> Pose:
        """From the upstream dict form ``{"bodies": {"candidate", "subset"}, "hands", "faces"}``."""
        subset = np.asarray(data["bodies"]["subset"], dtype=np.float64).reshape(-1, 18)
        feet = data.get("feet")
        return cls(
            candidate=np.asarray(data["bodies"]["candidate"], dtype=np.float64).reshape(-1, 2),
            subset=subset,
            hands=np.asarray(data["hands"], dtype=np.float64).reshape(-1, 21, 2),
            faces=np.asarray(data["faces"], dtype=np.float64).reshape(-1, 68, 2),
            feet=np.asarray(feet, dtype=np.float64).reshape(-1, 6, 2)
            if feet is not None
            else np.full((subset.shape[0], 6, 2), -1.0),
        )
