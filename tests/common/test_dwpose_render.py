"""Skeleton rendering: the differences between the controlnet and scaled styles."""

from __future__ import annotations

import numpy as np
import pytest

from predictors.common.dwpose.keypoints import Pose
from predictors.common.dwpose.render import hue_colour, length_width, render_pose

H, W = 400, 300


def single(offset_x: float = 0.0) -> Pose:
    body = np.array([
        (0.5, 0.1), (0.5, 0.2), (0.4, 0.2), (0.35, 0.35), (0.3, 0.5), (0.6, 0.2), (0.65, 0.35), (0.7, 0.5),
        (0.45, 0.5), (0.45, 0.7), (0.45, 0.9), (0.55, 0.5), (0.55, 0.7), (0.55, 0.9),
        (0.48, 0.08), (0.52, 0.08), (0.46, 0.1), (0.54, 0.1),
    ])  # fmt: skip
    body[:, 0] += offset_x
    fingers = np.array(
        [(0, 0)] + [(dx, dy) for dx in (-0.02, -0.01, 0, 0.01, 0.02) for dy in (0.02, 0.03, 0.04, 0.05)]
    )
    return Pose(
        candidate=body,
        subset=np.arange(18, dtype=float)[None],
        hands=np.stack([body[7] + fingers, body[4] + fingers]),
        faces=np.stack([np.linspace(0.44, 0.56, 68), np.full(68, 0.14)], axis=1)[None] + [offset_x, 0],
        feet=np.full((1, 6, 2), -1.0),
    )


def two_people() -> Pose:
    a, b = single(-0.2), single(0.25)
    return Pose(
        candidate=np.concatenate([a.candidate, b.candidate]),
        subset=np.arange(36, dtype=float).reshape(2, 18),
        hands=np.concatenate([a.hands[:1], b.hands[:1], a.hands[1:], b.hands[1:]]),
        faces=np.concatenate([a.faces, b.faces]),
        feet=np.full((2, 6, 2), -1.0),
    )


def at(canvas, point):
    return tuple(int(v) for v in canvas[int(point[1] * H), int(point[0] * W)])


def test_palette_and_red_blue_swap():
    pose = single()
    controlnet = render_pose(pose, H, W, style="controlnet")
    musepose = render_pose(pose, H, W, style="scaled")
    assert at(controlnet, pose.candidate[0]) == (255, 0, 0)  # red nose
    assert at(musepose, pose.candidate[0]) == (0, 0, 255)  # MusePose: blue nose
    assert at(controlnet, pose.hands[0, 5]) == (0, 0, 255)  # blue hand dots
    assert at(musepose, pose.hands[0, 5]) == (255, 0, 0)  # MusePose: red hand dots
    # Limbs are at 60%: the neck-right-shoulder limb (colour 0, red) halfway between its joints.
    middle = (pose.candidate[1] + pose.candidate[2]) / 2
    assert at(controlnet, middle) == (153, 0, 0)
    assert at(musepose, middle) == (0, 0, 153)


def test_musepose_draws_the_first_person_without_face():
    pose = two_people()
    controlnet = render_pose(pose, H, W, style="controlnet")
    musepose = render_pose(pose, H, W, style="scaled")
    second_nose = pose.candidate[18]
    assert at(controlnet, second_nose) == (255, 0, 0)
    assert at(musepose, second_nose) == (0, 0, 0)
    face_point = pose.faces[0, 0]
    assert at(controlnet, face_point) == (255, 255, 255)
    assert at(musepose, face_point) != (255, 255, 255)


def test_musepose_hands_are_the_first_persons_own_unless_upstream():
    pose = two_people()
    own = render_pose(pose, H, W, style="scaled")
    upstream = render_pose(pose, H, W, style="scaled", upstream_hands=True)
    right_hand_tip = pose.hands[2, 20]  # person 0's right hand
    second_left_tip = pose.hands[1, 20]  # person 1's left hand, upstream's hands[1]
    assert at(own, right_hand_tip) == (255, 0, 0) and at(own, second_left_tip) == (0, 0, 0)
    assert at(upstream, right_hand_tip) == (0, 0, 0) and at(upstream, second_left_tip) == (255, 0, 0)


def test_musepose_limb_width_grows_with_length():
    assert [length_width(d) for d in (0, 4.9, 5, 19, 20, 79, 80, 319, 320, 5000)] == [
        1,
        1,
        2,
        3,
        4,
        5,
        6,
        7,
        8,
        8,
    ]
    pose = single()

    def thigh_thickness(style, height, width):
        # The right thigh runs down x = 0.45 from y = 0.5 to 0.7: count lit pixels across it at y = 0.6.
        canvas = render_pose(pose, height, width, style=style)
        row = canvas[int(0.6 * height), int(0.3 * width) : int(0.5 * width)]
        return int(row.any(axis=-1).sum())

    # A 320 px thigh gets half-width 8 in MusePose's style, 4 in ControlNet's; a 10 px one 3 against 4.
    assert thigh_thickness("scaled", 1600, 1200) > thigh_thickness("controlnet", 1600, 1200) + 5
    assert thigh_thickness("scaled", 50, 200) < thigh_thickness("controlnet", 50, 200)


def test_hidden_and_off_canvas_points_are_skipped():
    pose = single()
    pose.subset[0, 0] = -1
    pose.hands[1] = -1.0
    canvas = render_pose(pose, H, W, style="controlnet")
    assert at(canvas, pose.candidate[0]) != (255, 0, 0)
    assert canvas[0, 0].tolist() == [0, 0, 0]


def test_hue_colours_match_the_hsv_wheel():
    assert hue_colour(0.0) == (255.0, 0.0, 0.0)
    assert hue_colour(1 / 3) == pytest.approx((0.0, 255.0, 0.0))
    assert hue_colour(0.55) == pytest.approx((0.0, 178.5, 255.0))


def test_unknown_style():
    with pytest.raises(ValueError, match="style"):
        render_pose(single(), H, W, style="openpose")
