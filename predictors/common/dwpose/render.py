"""Skeleton rendering in the two styles the models were trained on.

Both styles draw with the same OpenCV primitives on a black uint8 canvas, in this order:

1. Body limbs, the first 17 pairs of the OpenPose-18 limb list, for each limb and then each person: a filled
   convex polygon from ``cv2.ellipse2Poly`` centred on the limb's midpoint (integer-truncated), half-length
   ``int(length / 2)``, angle ``int(degrees)``, in the limb's palette colour.
2. The whole canvas times 0.6, truncated back to uint8 (limbs end up at 60% brightness).
3. A filled circle of radius 4 on every visible body point, in the point's palette colour.
4. Hands: 20 edges as ``cv2.line`` in hue ``edge / 20`` (HSV, full saturation and value), then a filled
   circle in (0, 0, 255) on every point. Points whose truncated pixel x or y is <= 0 are skipped (that
   covers the -1 placeholders of hidden points).
5. ``controlnet`` only: the face, filled white circles of radius 3.

The styles differ in sizes and scope:

- ``controlnet``: limb half-width 4, hand lines 2 px, hand dots radius 4, every person, face drawn.
- ``scaled``: limb half-width and hand-line thickness grow with the length in pixels (1 below 5 px, then
  +1 per doubling: 5, 10, 20, 40, 80, 160, 320), hand dots radius 3, first person only, no face; and the
  finished canvas has its red and blue channels swapped, exactly as MusePose's training renders (it draws
  in RGB and then converts as if the canvas were BGR).

Only ``scaled`` is drawn in a predictor; ``controlnet`` stays for the golden parity test of the drawing
primitives against ControlNet's own canvases (``tests/golden/test_dwpose_golden.py``).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from predictors.common.dwpose.keypoints import Pose

# OpenPose-18 limbs as (from, to) body rows; only the first 17 are drawn (the ear-shoulder pairs are not).
LIMBS = [
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
]  # fmt: skip

# Standard OpenPose palette, one colour per body point and per limb (channel 0 first).
PALETTE = [
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
]  # fmt: skip

# Hand skeleton: wrist to each finger base, then along each finger (thumb, index, middle, ring, pinky).
HAND_EDGES = [(0, 4 * f + 1) if j == 0 else (4 * f + j, 4 * f + j + 1) for f in range(5) for j in range(4)]

HAND_DOT = (0, 0, 255)
FACE_DOT = (255, 255, 255)
LIMB_DIM = 0.6
STYLES = ("controlnet", "scaled")


def length_width(length: float) -> int:
    """MusePose's line width for a limb or hand edge of ``length`` pixels."""
    for width, limit in enumerate((5, 10, 20, 40, 80, 160, 320), start=1):
        if length < limit:
            return width
    return 8


def hue_colour(hue: float) -> tuple[float, float, float]:
    """Fully saturated, full-value HSV -> RGB in 0..255, with the same float operations as
    matplotlib's ``hsv_to_rgb`` (so that the colour rounds to the same integers)."""
    sector = int(hue * 6.0)
    frac = hue * 6.0 - sector
    p, q, t, v = 0.0, 1.0 - frac, 1.0 - (1.0 - frac), 1.0
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][sector % 6]
    return tuple(channel * 255 for channel in rgb)


def _pixel(point: np.ndarray, width: int, height: int) -> tuple[int, int]:
    return int(point[0] * width), int(point[1] * height)


def draw_body(canvas: np.ndarray, candidate: np.ndarray, subset: np.ndarray, *, style: str) -> np.ndarray:
    height, width = canvas.shape[:2]
    for limb, pair in enumerate(LIMBS):
        for person in subset:
            rows = person[list(pair)]
            if -1 in rows:
                continue
            xs = candidate[rows.astype(int), 0] * float(width)
            ys = candidate[rows.astype(int), 1] * float(height)
            length = ((ys[0] - ys[1]) ** 2 + (xs[0] - xs[1]) ** 2) ** 0.5
            angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
            half_width = 4 if style == "controlnet" else length_width(length)
            polygon = cv2.ellipse2Poly(
                (int(np.mean(xs)), int(np.mean(ys))), (int(length / 2), half_width), int(angle), 0, 360, 1
            )
            cv2.fillConvexPoly(canvas, polygon, PALETTE[limb])
    canvas = (canvas * LIMB_DIM).astype(np.uint8)
    for point in range(18):
        for person in subset:
            row = int(person[point])
            if row == -1:
                continue
            cv2.circle(canvas, _pixel(candidate[row], width, height), 4, PALETTE[point], thickness=-1)
    return canvas


def draw_hands(canvas: np.ndarray, hands: np.ndarray, *, style: str) -> np.ndarray:
    height, width = canvas.shape[:2]
    for hand in hands:
        pixels = [_pixel(point, width, height) for point in hand]
        for edge, (a, b) in enumerate(HAND_EDGES):
            (x1, y1), (x2, y2) = pixels[a], pixels[b]
            if min(x1, y1, x2, y2) <= 0:
                continue
            thickness = 2 if style == "controlnet" else length_width(((x1 - x2) ** 2 + (y1 - y2) ** 2) ** 0.5)
            cv2.line(canvas, (x1, y1), (x2, y2), hue_colour(edge / len(HAND_EDGES)), thickness=thickness)
        radius = 4 if style == "controlnet" else 3
        for x, y in pixels:
            if x > 0 and y > 0:
                cv2.circle(canvas, (x, y), radius, HAND_DOT, thickness=-1)
    return canvas


def draw_faces(canvas: np.ndarray, faces: np.ndarray) -> np.ndarray:
    height, width = canvas.shape[:2]
    for face in faces:
        for point in face:
            x, y = _pixel(point, width, height)
            if x > 0 and y > 0:
                cv2.circle(canvas, (x, y), 3, FACE_DOT, thickness=-1)
    return canvas


def render_pose(pose: Pose, height: int, width: int, *, style: str = "scaled", upstream_hands: bool = False):
    """Draw ``pose`` on a black ``height`` x ``width`` uint8 RGB canvas in ``style`` (see the module doc).

    In the ``scaled`` style only the first person is drawn. MusePose itself takes the first two rows of
    ``pose.hands`` as that person's hands, which with two or more people are the first two people's left
    hands; ``upstream_hands=True`` keeps that, the default draws the first person's own hands.
    """
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose one of {STYLES}")
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    if style == "controlnet":
        canvas = draw_body(canvas, pose.candidate, pose.subset, style=style)
        canvas = draw_hands(canvas, pose.hands, style=style)
        return draw_faces(canvas, pose.faces)
    hands = pose.hands[:2] if upstream_hands else pose.person_hands(0)
    canvas = draw_body(canvas, pose.candidate[:18], pose.subset[:1], style=style)
    canvas = draw_hands(canvas, hands, style=style)
    return np.ascontiguousarray(canvas[..., ::-1])
