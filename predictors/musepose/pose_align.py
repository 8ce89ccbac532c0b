"""MusePose pose alignment: retarget a dance video's poses to the body proportions of a reference image.

Input: DWPose results as normalised ``Pose`` objects (one for the reference image, one per video frame)
and the two image sizes. Output: the aligned poses, the per-bone scales and the rendered pose frames, which
have the reference image's aspect.

How it works (MusePose's ``pose_align.py``), in height-normalised coordinates (x * width / height, y):

- Per-bone scales are reference bone length / bone length in the frame ``align_frame``: neck (0-1),
  face (16-17, the ears), shoulder (2-5), upper arms (2-3, 5-6) and lower arms (3-4, 6-7) as the mean of
  both sides, body length (neck to mid-hip), upper and lower legs likewise, and the hand scale (the mean of
  wrist-to-finger-base ratios averaged with both arm scales).
- Each frame is re-chained outward from the neck: the nose scales about the neck, eyes and ears about the
  new nose, shoulders and hips about the neck, each elbow/wrist/knee/ankle from its new parent, hands from
  the new wrists. Then the offset between the reference neck and the ``align_frame`` neck is added and x is
  divided by the reference aspect, so the pose lives in the reference image's normalised coordinates.
- Frames are drawn MusePose-style on a canvas 1024 wide with the video's aspect, then resized (bilinear) to
  768 high at the reference aspect.

``parity=True`` reproduces upstream exactly, bugs included. The default fixes these, and is identical to
upstream wherever upstream's inputs are sound (hidden points keep upstream's arithmetic too: the -1
placeholders get the offset added, which never makes y positive, so they are never drawn):

- a bone of zero length in the align frame gives an infinite (or NaN) scale; upstream keeps inf (its
  replacement writes into a copy) and sets NaN to 1. Here any scale that cannot be measured falls back to
  the other side of a paired bone, else to the mean of the scales that could be measured;
- a bone hidden (score <= 0.3) in the reference or the align frame is measured from raw, meaningless
  coordinates upstream; here it is not measured, and the same fallback keeps the video's own proportions
  for it;
- hand ratios upstream include the -1 placeholders of hidden hand points; here only visible points count;
- with two or more people upstream's hands are ``hands[:2]``, the first two people's *left* hands; here
  the first person's own left and right hands;
- no GUI calls (upstream calls ``cv2.destroyAllWindows``, which fails with headless OpenCV).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from predictors.common.dwpose.keypoints import Pose
from predictors.common.dwpose.render import render_pose

OUTPUT_HEIGHT = 768
CANVAS_WIDTH = 1024
HIDDEN = -1.0

SCALE_NAMES = (
    "scale_neck",
    "scale_face",
    "scale_shoulder",
    "scale_arm_upper",
    "scale_arm_lower",
    "scale_hand",
    "scale_body_len",
    "scale_leg_upper",
    "scale_leg_lower",
)
# Bones measured for each scale; two bones mean "the average of both sides".
_BONES = {
    "scale_neck": [(0, 1)],
    "scale_face": [(16, 17)],
    "scale_shoulder": [(2, 5)],
    "scale_arm_upper": [(2, 3), (5, 6)],
    "scale_arm_lower": [(3, 4), (6, 7)],
    "scale_leg_upper": [(8, 9), (11, 12)],
    "scale_leg_lower": [(9, 10), (12, 13)],
}
_HAND_TIPS = (1, 5, 9, 13, 17)


@dataclass
class Person:
    """One person in height-normalised coordinates: body [18,2] (raw), visible [18] bool, hands [2,21,2]
    (left, right; -1 placeholders scaled like any other value), hands_visible [2,21] bool, faces [1,68,2]."""

    body: np.ndarray
    visible: np.ndarray
    hands: np.ndarray
    hands_visible: np.ndarray
    faces: np.ndarray


@dataclass
class AlignResult:
    """``poses``: one aligned single-person ``Pose`` per frame from ``align_frame`` on, normalised to the
    reference image; ``scales``: the nine scales; ``offset``: reference neck - align-frame neck
    (height-normalised)."""

    poses: list[Pose]
    scales: dict[str, float]
    offset: np.ndarray
    ref_size: tuple[int, int]
    video_size: tuple[int, int]


def first_person(pose: Pose, *, parity: bool) -> Pose:
    """The first person's rows; in parity mode the hands are upstream's ``hands[:2]``."""
    return Pose(
        candidate=pose.candidate[:18].copy(),
        subset=pose.subset[:1].copy(),
        hands=(pose.hands[:2] if parity else pose.person_hands(0)).copy(),
        faces=pose.faces[:1].copy(),
        feet=pose.feet[:1].copy(),
    )


def _person(pose: Pose, ratio: float, *, parity: bool) -> Person:
    single = first_person(pose, parity=parity)
    body, hands, faces = single.candidate.copy(), single.hands.copy(), single.faces.copy()
    body[:, 0] *= ratio
    hands[:, :, 0] *= ratio
    faces[:, :, 0] *= ratio
    hands_visible = ~(single.hands == HIDDEN).all(axis=-1)
    return Person(body, single.subset[0] != -1, hands, hands_visible, faces)


def _ratio(ref: Person, video: Person, a: int, b: int, *, parity: bool) -> float:
    ref_len = np.linalg.norm(ref.body[a] - ref.body[b])
    video_len = np.linalg.norm(video.body[a] - video.body[b])
    if not parity and not (ref.visible[[a, b]].all() and video.visible[[a, b]].all() and video_len > 0):
        return float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(ref_len / video_len)


def _mean_ratio(ratios: list[float], *, parity: bool) -> float:
    if parity:
        return sum(ratios) / len(ratios)
    finite = [r for r in ratios if np.isfinite(r)]
    return sum(finite) / len(finite) if finite else float("nan")


def _hand_ratios(ref: Person, video: Person, *, parity: bool) -> list[float]:
    ratios = []
    for hand in (0, 1):
        for tip in _HAND_TIPS:
            video_len = np.linalg.norm(video.hands[hand, 0] - video.hands[hand, tip])
            ref_len = np.linalg.norm(ref.hands[hand, 0] - ref.hands[hand, tip])
            if video_len == 0:
                continue
            if not parity and not (
                ref.hands_visible[hand, [0, tip]].all() and video.hands_visible[hand, [0, tip]].all()
            ):
                continue
            ratios.append(ref_len / video_len)
    return ratios


def compute_scales(ref: Person, video: Person, *, parity: bool) -> dict[str, float]:
    """The nine per-bone scales (reference / align frame)."""
    scales = {
        name: _mean_ratio([_ratio(ref, video, a, b, parity=parity) for a, b in bones], parity=parity)
        for name, bones in _BONES.items()
    }
    ref_len = np.linalg.norm(ref.body[1] - (ref.body[8] + ref.body[11]) / 2)
    video_len = np.linalg.norm(video.body[1] - (video.body[8] + video.body[11]) / 2)
    torso_seen = ref.visible[[1, 8, 11]].all() and video.visible[[1, 8, 11]].all() and video_len > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        scales["scale_body_len"] = float(ref_len / video_len) if parity or torso_seen else float("nan")

    hand_ratios = _hand_ratios(ref, video, parity=parity)
    arms = scales["scale_arm_upper"] + scales["scale_arm_lower"]
    if hand_ratios:
        scales["scale_hand"] = (sum(hand_ratios) / len(hand_ratios) + arms) / 3
    else:
        scales["scale_hand"] = arms / 2

    if parity:
        return {name: 1.0 if np.isnan(scales[name]) else scales[name] for name in SCALE_NAMES}
    measured = [value for value in scales.values() if np.isfinite(value)]
    fallback = sum(measured) / len(measured) if measured else 1.0
    return {name: scales[name] if np.isfinite(scales[name]) else fallback for name in SCALE_NAMES}


def _scale_about(points: np.ndarray, centre: np.ndarray, scale: float) -> np.ndarray:
    """Scale points about ``centre``. Through ``cv2.getRotationMatrix2D`` like upstream: OpenCV rounds the
    centre to float32, and the result must match upstream to the last bits."""
    matrix = cv2.getRotationMatrix2D((centre[0], centre[1]), 0, scale)
    return np.dot(points, matrix[:, :2].T) + matrix[:, 2]


def align_person(person: Person, scales: dict[str, float]) -> Person:
    """Re-chain one frame's bones outward from the neck with ``scales`` (height-normalised)."""
    body, hands = person.body.copy(), person.hands.copy()
    before = person.body
    body[[0]] = _scale_about(body[[0]], body[1], scales["scale_neck"])
    body[[14, 15, 16, 17]] = _scale_about(
        before[[14, 15, 16, 17]] - before[[0]] + body[[0]], body[0], scales["scale_face"]
    )
    body[[2, 5]] = _scale_about(body[[2, 5]], body[1], scales["scale_shoulder"])
    # Right arm chain ends in hands[1], the left arm chain in hands[0].
    for shoulder, elbow, wrist, hand in ((2, 3, 4, 1), (5, 6, 7, 0)):
        body[[elbow]] = _scale_about(
            before[[elbow]] - before[[shoulder]] + body[[shoulder]], body[shoulder], scales["scale_arm_upper"]
        )
        body[[wrist]] = _scale_about(
            before[[wrist]] - before[[elbow]] + body[[elbow]], body[elbow], scales["scale_arm_lower"]
        )
        hands[hand] = _scale_about(
            person.hands[hand] - before[[wrist]] + body[[wrist]], body[wrist], scales["scale_hand"]
        )
    body[[8, 11]] = _scale_about(body[[8, 11]], body[1], scales["scale_body_len"])
    for hip, knee, ankle in ((8, 9, 10), (11, 12, 13)):
        body[[knee]] = _scale_about(
            before[[knee]] - before[[hip]] + body[[hip]], body[hip], scales["scale_leg_upper"]
        )
        body[[ankle]] = _scale_about(
            before[[ankle]] - before[[knee]] + body[[knee]], body[knee], scales["scale_leg_lower"]
        )
    return Person(body, person.visible, hands, person.hands_visible, person.faces.copy())


def align_poses(
    reference: Pose,
    frames: list[Pose],
    ref_size: tuple[int, int],
    video_size: tuple[int, int],
    *,
    align_frame: int = 0,
    parity: bool = False,
) -> AlignResult:
    """Align ``frames[align_frame:]`` to ``reference``. Sizes are (width, height) in pixels."""
    if not 0 <= align_frame < len(frames):
        raise ValueError(f"align_frame {align_frame} is outside the {len(frames)} frames")
    ref_ratio = ref_size[0] / ref_size[1]
    video_ratio = video_size[0] / video_size[1]
    ref = _person(reference, ref_ratio, parity=parity)
    anchor = _person(frames[align_frame], video_ratio, parity=parity)
    scales = compute_scales(ref, anchor, parity=parity)
    offset = ref.body[1] - anchor.body[1]

    poses = []
    for pose in frames[align_frame:]:
        original = first_person(pose, parity=parity)
        aligned = align_person(_person(pose, video_ratio, parity=parity), scales)
        parts = []
        for moved, source in (
            (aligned.body, original.candidate),
            (aligned.hands, original.hands),
            (aligned.faces, original.faces),
        ):
            moved = moved.copy()
            hidden = source == HIDDEN
            moved[hidden] = HIDDEN
            moved = np.nan_to_num(moved, nan=HIDDEN)
            moved = moved + offset
            moved[..., 0] /= ref_ratio
            parts.append(moved)
        poses.append(Pose(parts[0], original.subset, parts[1], parts[2], original.feet))
    return AlignResult(poses, scales, offset, tuple(ref_size), tuple(video_size))


def pose_frame_size(aspect_size: tuple[int, int], height: int = OUTPUT_HEIGHT) -> tuple[int, int]:
    """(width, height) of the pose frames: ``height`` high at the aspect of ``aspect_size``, an even width."""
    aspect_w, aspect_h = aspect_size
    return int((height / aspect_h * aspect_w) // 2 * 2), height


def render_poses(
    poses: Iterable[Pose], video_size: tuple[int, int], size: tuple[int, int]
) -> Iterator[np.ndarray]:
    """Pose frames, uint8 RGB at ``size``: each pose drawn MusePose-style on a canvas CANVAS_WIDTH wide with
    the video's aspect, then resized bilinearly (the frame's aspect may differ from the canvas's)."""
    video_w, video_h = video_size
    canvas_h = int(video_h * CANVAS_WIDTH / video_w)
    for pose in poses:
        canvas = render_pose(pose, canvas_h, CANVAS_WIDTH, style="scaled")
        yield cv2.resize(canvas, size, interpolation=cv2.INTER_LINEAR)


def render_frames(result: AlignResult, *, height: int = OUTPUT_HEIGHT) -> Iterator[np.ndarray]:
    """The aligned pose frames at ``pose_frame_size`` of the reference: the reference's aspect."""
    return render_poses(result.poses, result.video_size, pose_frame_size(result.ref_size, height))
