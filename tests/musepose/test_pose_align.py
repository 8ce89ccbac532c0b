"""pose_align: each upstream bug has a test that parity mode fails and the default mode passes, and the
default mode equals parity mode wherever upstream's inputs are sound."""

from __future__ import annotations

import inspect

import cv2
import numpy as np
import pytest

from predictors.common.dwpose import Pose
from predictors.musepose import pose_align
from predictors.musepose.pose_align import SCALE_NAMES, align_poses, pose_frame_size, render_frames

VIDEO = (640, 360)
REF = (384, 512)

# OpenPose-18 body in units of body height, origin at the nose; x to the image's right.
TEMPLATE = np.array([
    (0, 0), (0, 0.15), (-0.12, 0.15), (-0.18, 0.32), (-0.2, 0.48), (0.12, 0.15), (0.18, 0.32), (0.2, 0.48),
    (-0.08, 0.5), (-0.09, 0.72), (-0.1, 0.95), (0.08, 0.5), (0.09, 0.72), (0.1, 0.95),
    (-0.03, -0.02), (0.03, -0.02), (-0.06, 0.0), (0.06, 0.0),
])  # fmt: skip
FINGERS = np.array(
    [(0, 0)] + [(dx, dy) for dx in (-0.02, -0.01, 0, 0.01, 0.02) for dy in (0.02, 0.03, 0.04, 0.05)]
)


def person(size, centre_x, top, image=VIDEO):
    """Pixel body [18,2], hands [2,21,2] (left, right), face [68,2] of a standing person."""
    body = TEMPLATE * size + [centre_x, top]
    hands = np.stack([body[7] + FINGERS * size, body[4] + FINGERS * size])
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    face = body[0] + np.stack([np.cos(angles), np.sin(angles)], axis=1) * 0.03 * size
    scale = np.array(image, dtype=float)
    return body / scale, hands / scale, face / scale


def make_pose(*people):
    """A normalised Pose of one or more ``person`` tuples, everything visible except the feet."""
    count = len(people)
    return Pose(
        candidate=np.concatenate([p[0] for p in people]),
        subset=np.arange(18 * count, dtype=float).reshape(count, 18),
        hands=np.concatenate([np.stack([p[1][0] for p in people]), np.stack([p[1][1] for p in people])]),
        faces=np.stack([p[2] for p in people]),
        feet=np.full((count, 6, 2), -1.0),
    )


@pytest.fixture
def clean():
    reference = make_pose(person(400, 192, 60, REF))
    frames = [make_pose(person(250 + 5 * t, 320 + 4 * t, 40, VIDEO)) for t in range(4)]
    return reference, frames


def _align(reference, frames, parity):
    return align_poses(reference, frames, REF, VIDEO, parity=parity)


def test_default_equals_parity_on_sound_input(clean):
    _, frames = clean
    upstream, fixed = _align(*clean, parity=True), _align(*clean, parity=False)
    assert upstream.scales == fixed.scales
    for a, b in zip(upstream.poses, fixed.poses, strict=True):
        np.testing.assert_array_equal(a.candidate, b.candidate)
        np.testing.assert_array_equal(a.hands, b.hands)
    for a, b in zip(render_frames(upstream), render_frames(fixed), strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(fixed.poses) == len(frames)


def test_scales_are_reference_over_video_bone_lengths(clean):
    reference, frames = clean
    result = _align(reference, frames, parity=False)
    # Reference 400 px tall in a 512-high image, video 250 px in 360: every bone has the same ratio.
    expected = (400 / 512) / (250 / 360)
    for name in SCALE_NAMES:
        assert result.scales[name] == pytest.approx(expected, rel=1e-9), name
    # The first frame's neck lands on the reference neck, in reference-normalised coordinates.
    np.testing.assert_allclose(result.poses[0].candidate[1], reference.candidate[1], atol=1e-12)


# A distinct length ratio for every bone, so that measuring a scale on the wrong bone changes its value.
BONE_RATIOS = {
    "scale_neck": 1.3,
    "scale_face": 0.8,
    "scale_shoulder": 1.15,
    "scale_arm_upper": 0.9,
    "scale_arm_lower": 1.25,
    "scale_body_len": 1.05,
    "scale_leg_upper": 0.85,
    "scale_leg_lower": 1.2,
    "scale_hand": 0.7,
}
# (parent, child, scale): the skeleton re-chained outward from the neck; children move with their parent.
CHAIN = (
    (1, 0, "scale_neck"),
    (1, 2, "scale_shoulder"),
    (1, 5, "scale_shoulder"),
    (2, 3, "scale_arm_upper"),
    (5, 6, "scale_arm_upper"),
    (3, 4, "scale_arm_lower"),
    (6, 7, "scale_arm_lower"),
    (1, 8, "scale_body_len"),
    (1, 11, "scale_body_len"),
    (8, 9, "scale_leg_upper"),
    (11, 12, "scale_leg_upper"),
    (9, 10, "scale_leg_lower"),
    (12, 13, "scale_leg_lower"),
)


def proportioned_person(size, centre_x, top, image):
    """``person`` with every bone of the template stretched by its own factor in BONE_RATIOS."""
    template = TEMPLATE * size
    body = template.copy()
    for parent, child, name in CHAIN:
        body[child] = body[parent] + BONE_RATIOS[name] * (template[child] - template[parent])
    # Eyes and ears hang from the nose; the face scale stretches them about it.
    body[14:18] = body[0] + BONE_RATIOS["scale_face"] * (template[14:18] - template[0])
    body += [centre_x, top]
    fingers = FINGERS * size * BONE_RATIOS["scale_hand"]
    hands = np.stack([body[7] + fingers, body[4] + fingers])
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    face = body[0] + np.stack([np.cos(angles), np.sin(angles)], axis=1) * 0.03 * size
    scale = np.array(image, dtype=float)
    return body / scale, hands / scale, face / scale


def test_each_scale_is_measured_on_its_own_bone():
    reference = make_pose(proportioned_person(400, 192, 60, REF))
    frames = [make_pose(person(250, 320, 40, VIDEO))]
    result = _align(reference, frames, parity=False)
    size = (400 / 512) / (250 / 360)  # the overall size ratio, in height-normalised units
    expected = {name: ratio * size for name, ratio in BONE_RATIOS.items()}
    # The hand scale averages the finger ratios with both arm scales: (hand + upper + lower) / 3.
    expected["scale_hand"] = (
        (BONE_RATIOS["scale_hand"] + BONE_RATIOS["scale_arm_upper"] + BONE_RATIOS["scale_arm_lower"])
        / 3
        * size
    )
    for name in SCALE_NAMES:
        assert result.scales[name] == pytest.approx(expected[name], rel=1e-9), name
    assert _align(reference, frames, parity=True).scales == result.scales

    # The aligned frame then has the reference's bones: lengths in reference height units.
    aligned, target = result.poses[0].candidate.copy(), reference.candidate.copy()
    for points in (aligned, target):
        points[:, 0] *= REF[0] / REF[1]
    for parent, child, _ in (*CHAIN, (16, 17, "scale_face")):
        assert np.linalg.norm(aligned[child] - aligned[parent]) == pytest.approx(
            np.linalg.norm(target[child] - target[parent]), rel=1e-6
        ), (parent, child)
    np.testing.assert_allclose(aligned[1], target[1], atol=1e-12)


def test_zero_length_bone_gets_a_finite_scale(clean):
    reference, frames = clean
    frames[0].candidate[17] = frames[0].candidate[16]  # ears on one spot: the face bone has length 0
    upstream = _align(reference, frames, parity=True)
    fixed = _align(reference, frames, parity=False)
    assert np.isinf(upstream.scales["scale_face"])
    # Upstream's infinite scale turns the ears into NaN, then into the -1 placeholder: they leave the canvas
    # although they are marked visible.
    assert (upstream.poses[1].candidate[16:18] < 0).all()
    assert np.isfinite(fixed.scales["scale_face"])
    others = [fixed.scales[n] for n in SCALE_NAMES if n != "scale_face"]
    assert fixed.scales["scale_face"] == pytest.approx(np.mean(others[:5] + others[5:]), rel=0.05)
    assert np.abs(fixed.poses[1].candidate[16:18]).max() < 2


def test_nan_scale_falls_back_like_inf(clean):
    reference, frames = clean
    frames[0].candidate[17] = frames[0].candidate[16]
    reference.candidate[17] = reference.candidate[16]  # 0 / 0
    assert _align(reference, frames, parity=True).scales["scale_face"] == 1.0  # upstream: NaN -> 1
    fixed = _align(reference, frames, parity=False)
    assert fixed.scales["scale_face"] == pytest.approx(fixed.scales["scale_neck"], rel=1e-9)


def test_two_people_use_the_first_persons_own_hands():
    reference = make_pose(person(400, 192, 60, REF))
    # The second person is smaller, so their hands have a smaller finger spread.
    first, second = person(250, 200, 40), person(200, 480, 80)
    frames = [make_pose(first, second) for _ in range(2)]
    upstream = _align(reference, frames, parity=True)
    fixed = _align(reference, frames, parity=False)

    # Upstream's hands[1] is the second person's left hand, carried along with the first person's right
    # wrist but still hanging where the second person stood; the fix uses the first person's right hand.
    np.testing.assert_allclose(fixed.poses[0].hands[1, 0], fixed.poses[0].candidate[4], atol=1e-6)
    assert np.linalg.norm(upstream.poses[0].hands[1, 0] - upstream.poses[0].candidate[4]) > 0.5
    single = _align(reference, [make_pose(first)] * 2, parity=False)
    np.testing.assert_array_equal(next(render_frames(single)), next(render_frames(fixed)))
    assert not np.array_equal(next(render_frames(upstream)), next(render_frames(fixed)))


def test_limbs_missing_in_the_reference_keep_the_videos_proportions(clean):
    reference, frames = clean
    for knee_or_ankle in (9, 10, 12, 13):
        reference.subset[0, knee_or_ankle] = -1
        reference.candidate[knee_or_ankle] = [0.0, 0.0]  # what a hidden point's raw location can be
    upstream = _align(reference, frames, parity=True)
    fixed = _align(reference, frames, parity=False)
    body_scale = fixed.scales["scale_body_len"]
    assert abs(upstream.scales["scale_leg_lower"] / body_scale - 1) > 0.2
    assert fixed.scales["scale_leg_upper"] == pytest.approx(body_scale, rel=1e-9)
    assert fixed.scales["scale_leg_lower"] == pytest.approx(body_scale, rel=1e-9)


def test_hidden_reference_hand_does_not_inflate_the_hand_scale(clean):
    reference, frames = clean
    reference.hands[1] = -1.0  # right hand not seen in the reference
    upstream = _align(reference, frames, parity=True)
    fixed = _align(reference, frames, parity=False)
    arm = fixed.scales["scale_arm_upper"]
    assert abs(upstream.scales["scale_hand"] / arm - 1) > 0.1
    assert fixed.scales["scale_hand"] == pytest.approx(arm, rel=1e-9)


def test_no_gui_calls(clean, monkeypatch):
    def forbidden(*args, **kwargs):
        raise cv2.error("The function is not implemented (headless OpenCV)")

    for name in ("imshow", "waitKey", "destroyAllWindows", "namedWindow"):
        monkeypatch.setattr(cv2, name, forbidden)
    for parity in (True, False):
        result = _align(*clean, parity=parity)
        assert len(list(render_frames(result))) == len(result.poses)
    source = inspect.getsource(pose_align)
    assert not any(f"cv2.{name}(" in source for name in ("imshow", "waitKey", "destroyAllWindows"))


def test_output_has_the_reference_aspect_and_even_width(clean):
    result = _align(*clean, parity=False)
    frames = list(render_frames(result))
    assert pose_frame_size((384, 512)) == (576, 768)
    assert pose_frame_size((1080, 1920)) == (432, 768)
    assert pose_frame_size((333, 500)) == (510, 768)
    assert all(frame.shape == (768, 576, 3) and frame.dtype == np.uint8 for frame in frames)


def test_align_frame_selects_the_anchor_and_drops_earlier_frames(clean):
    reference, frames = clean
    result = align_poses(reference, frames, REF, VIDEO, align_frame=2)
    assert len(result.poses) == len(frames) - 2
    np.testing.assert_allclose(result.poses[0].candidate[1], reference.candidate[1], atol=1e-12)
    with pytest.raises(ValueError):
        align_poses(reference, frames, REF, VIDEO, align_frame=len(frames))
