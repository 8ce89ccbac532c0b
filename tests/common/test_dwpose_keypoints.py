"""Keypoint formats: COCO-WholeBody -> OpenPose-134, and the normalised Pose layout."""

from __future__ import annotations

import numpy as np

from predictors.common.dwpose.keypoints import Pose, to_openpose


def _coco(people: int = 1):
    keypoints = np.stack(
        [np.stack([np.arange(133) * 2.0 + p, np.arange(133) + 1000.0 * p], axis=1) for p in range(people)]
    )
    scores = np.full((people, 133), 0.9, dtype=np.float32)
    return keypoints, scores


def test_openpose_order_and_neck():
    keypoints, scores = _coco()
    scores[0, 6] = 0.2  # right shoulder weak: the neck is not confident
    openpose, op_scores = to_openpose(keypoints, scores)
    assert openpose.shape == (1, 134, 2) and op_scores.shape == (1, 134)
    np.testing.assert_array_equal(openpose[0, 1], (keypoints[0, 5] + keypoints[0, 6]) / 2)  # neck
    assert op_scores[0, 1] == 0.0
    # OpenPose 2 = right shoulder (COCO 6), 5 = left shoulder (COCO 5), 14 = right eye (COCO 2),
    # 17 = left ear (COCO 3).
    for openpose_row, coco_row in [
        (0, 0),
        (2, 6),
        (4, 10),
        (5, 5),
        (7, 9),
        (8, 12),
        (11, 11),
        (13, 15),
        (14, 2),
        (17, 3),
    ]:
        np.testing.assert_array_equal(openpose[0, openpose_row], keypoints[0, coco_row])
    # Feet, face and hands follow unchanged, one row later.
    np.testing.assert_array_equal(openpose[0, 18:], keypoints[0, 17:])
    scores[0, 6] = 0.9
    assert to_openpose(keypoints, scores)[1][0, 1] == 1.0


def test_pose_layout_for_two_people():
    keypoints, scores = _coco(2)
    scores[1, 0] = 0.1  # second person's nose hidden
    scores[0, 91:112] = 0.2  # first person's left hand hidden
    openpose, op_scores = to_openpose(keypoints, scores)
    pose = Pose.from_openpose(openpose, op_scores, width=400, height=2000)
    assert pose.candidate.shape == (36, 2)
    np.testing.assert_array_equal(pose.subset[0], np.arange(18))
    assert pose.subset[1, 0] == -1 and pose.subset[1, 1] == 19
    np.testing.assert_allclose(pose.candidate[18], openpose[1, 0] / [400, 2000])  # raw even when hidden
    assert pose.hands.shape == (4, 21, 2)
    assert (pose.hands[0] == -1).all()  # person 0 left (hidden)
    np.testing.assert_allclose(pose.hands[1], openpose[1, 92:113] / [400, 2000])  # person 1 left
    np.testing.assert_allclose(pose.hands[2], openpose[0, 113:] / [400, 2000])  # person 0 right
    np.testing.assert_array_equal(pose.person_hands(1), pose.hands[[1, 3]])
    assert pose.faces.shape == (2, 68, 2) and pose.feet.shape == (2, 6, 2)
