"""Canvas comparisons with upstream's pose renders, without a tolerance tuned to one case.

OpenCV 5 clips primitives that reach past the canvas differently from the OpenCV 4.8 that drew upstream's
canvases: the clipped part is re-rasterised from rounded end points, so its pixels may move by one. So every
pixel off such a primitive must be equal, and on one (within that pixel) a difference is accepted, wherever
on the canvas it lies.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from predictors.common.dwpose import Pose
from predictors.common.dwpose.render import HAND_EDGES, LIMBS, length_width

CLIP_SHIFT = 1


def clipped_primitives(pose: Pose, height: int, width: int) -> np.ndarray:
    """bool [height, width]: the pixels of every primitive the musepose style draws for ``pose`` that
    reaches past the canvas, widened by ``CLIP_SHIFT``. Restates the geometry of ``render_pose``: limbs are
    ellipse polygons, body points circles of radius 4, hand edges lines (skipped when an end has x or y <= 0),
    hand points circles of radius 3."""
    mask = np.zeros((height, width), np.uint8)

    def outside(xs, ys, reach) -> bool:
        return (
            min(xs) - reach < 0
            or min(ys) - reach < 0
            or max(xs) + reach > width - 1
            or max(ys) + reach > height - 1
        )

    candidate, subset = pose.candidate[:18], pose.subset[:1]
    for pair in LIMBS:
        rows = subset[0][list(pair)]
        if -1 in rows:
            continue
        xs = candidate[rows.astype(int), 0] * float(width)
        ys = candidate[rows.astype(int), 1] * float(height)
        length = ((ys[0] - ys[1]) ** 2 + (xs[0] - xs[1]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
        polygon = cv2.ellipse2Poly(
            (int(np.mean(xs)), int(np.mean(ys))),
            (int(length / 2), length_width(length)),
            int(angle),
            0,
            360,
            1,
        )
        if outside(polygon[:, 0], polygon[:, 1], 0):
            cv2.fillConvexPoly(mask, polygon, 1)
    for row in subset[0]:
        if row != -1:
            x, y = (int(v) for v in candidate[int(row)] * [width, height])
            if outside([x], [y], 4):
                cv2.circle(mask, (x, y), 4, 1, thickness=-1)
    for hand in pose.person_hands(0):
        pixels = [(int(x * width), int(y * height)) for x, y in hand]
        for a, b in HAND_EDGES:
            (x1, y1), (x2, y2) = pixels[a], pixels[b]
            thickness = length_width(((x1 - x2) ** 2 + (y1 - y2) ** 2) ** 0.5)
            if min(x1, y1, x2, y2) > 0 and outside([x1, x2], [y1, y2], thickness):
                cv2.line(mask, (x1, y1), (x2, y2), 1, thickness=thickness)
        for x, y in pixels:
            if x > 0 and y > 0 and outside([x], [y], 3):
                cv2.circle(mask, (x, y), 3, 1, thickness=-1)
    size = 2 * CLIP_SHIFT + 1
    return cv2.dilate(mask, np.ones((size, size), np.uint8)).astype(bool)


def assert_equal_off_clipped_primitives(ours: np.ndarray, theirs: np.ndarray, allowed: np.ndarray) -> None:
    assert ours.shape == theirs.shape
    differing = (ours != theirs).any(axis=-1)
    stray = differing & ~allowed
    assert not stray.any(), f"{int(stray.sum())} pixels differ off the primitives that leave the canvas"


def resized_footprint(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The output pixels of a bilinear resize to ``size`` that read any pixel of ``mask``."""
    return cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_LINEAR) > 0
