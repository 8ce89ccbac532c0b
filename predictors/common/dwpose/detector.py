"""YOLOX person detector (``yolox_l.onnx``: ``images`` [1,3,640,640] -> ``output`` [1,8400,85]).

The network sees a 640x640 letterbox (image resized by r = min(640/H, 640/W), placed top-left, padded with
114) holding raw 0-255 values in BGR order, the order YOLOX was trained on. Each output row is
[dx, dy, log w, log h, objectness, 80 class probabilities] of one anchor; anchors run over the stride 8, 16
and 32 grids, row-major. The grid decode happens here.

Two rule sets pick the person boxes from the decoded anchors:

- ``controlnet`` (DWPose's ONNX path, as used by ControlNet): score = obj * cls for every class,
  candidates > 0.1, class-aware greedy NMS (IoU with +1 areas, suppress > 0.45), keep class 0 with
  score > 0.3.
- ``mmpose`` (mmdet YOLOX + mmpose, as MusePose runs it): per anchor only the best class, score =
  obj * best >= 0.01, class-aware NMS (IoU without +1, suppress > 0.65), keep class 0 with score > 0.5,
  then mmpose's NMS (IoU with +1, suppress > 0.7).

Only ``mmpose`` runs in a predictor. ``controlnet`` stays because the golden parity tests
(``tests/golden/test_dwpose_golden.py``) check this decode and the estimator against DWPose's own ONNX path,
whose reference outputs use those rules.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

INPUT_SIZE = 640
PAD_VALUE = 114
STRIDES = (8, 16, 32)
ANCHORS_PER_STRIDE = tuple((INPUT_SIZE // stride) ** 2 for stride in STRIDES)
PERSON = 0
# The lowest score either rule set considers (MusePose's 0.01); anchors less objective are skipped early.
MIN_OBJECTNESS = 0.01


@dataclass(frozen=True)
class Detections:
    """Person boxes in original-image pixels, xyxy, in descending score order."""

    boxes: np.ndarray  # [N, 4] float
    scores: np.ndarray  # [N]


def letterbox(image_rgb: np.ndarray, size: int = INPUT_SIZE) -> tuple[np.ndarray, float]:
    """uint8 RGB [H,W,3] -> (float32 BGR [3,size,size] network input, resize ratio r)."""
    height, width = image_rgb.shape[:2]
    ratio = min(size / height, size / width)
    new_w, new_h = int(width * ratio), int(height * ratio)
    padded = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    padded[:new_h, :new_w] = cv2.resize(image_rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    # Channels are reversed on the small letterbox rather than on the full-size frame: far less to copy.
    return np.ascontiguousarray(padded.transpose(2, 0, 1)[::-1], dtype=np.float32), ratio


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    cells, strides = [], []
    for stride in STRIDES:
        side = size // stride
        xs, ys = np.meshgrid(np.arange(side), np.arange(side))
        cells.append(np.stack([xs, ys], axis=-1).reshape(-1, 2))
        strides.append(np.full((side * side, 1), stride))
    return np.concatenate(cells), np.concatenate(strides)


_GRID, _GRID_STRIDES = _grid(INPUT_SIZE)


def decode(
    output: np.ndarray, ratio: float, min_objectness: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[8400, 85] network output -> (anchor indices, their xyxy boxes in original pixels [K,4], their
    obj * class scores [K,80]) for the anchors whose objectness is at least ``min_objectness``. Class
    probabilities are at most 1, so no anchor below it can score above it."""
    anchors = np.flatnonzero(output[:, 4] >= min_objectness)
    rows = output[anchors]
    # float32 throughout, as the network output: the boxes carry the same rounding as DWPose's own decode.
    centre = ((rows[:, :2] + _GRID[anchors]) * _GRID_STRIDES[anchors]).astype(np.float32)
    size = (np.exp(rows[:, 2:4]) * _GRID_STRIDES[anchors]).astype(np.float32)
    boxes = np.empty((len(anchors), 4), dtype=np.float32)
    boxes[:, :2] = centre - size / 2.0
    boxes[:, 2:] = centre + size / 2.0
    boxes /= ratio
    scores = rows[:, 4:5] * rows[:, 5:]
    return anchors, boxes, scores


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, *, plus_one: bool) -> list[int]:
    """Indices kept by greedy NMS in descending score order; a box is dropped when its IoU with a kept box
    exceeds ``threshold``. ``plus_one`` measures widths as x1 - x0 + 1 (pixel-inclusive boxes)."""
    one = 1.0 if plus_one else 0.0
    x0, y0, x1, y1 = boxes.T
    areas = (x1 - x0 + one) * (y1 - y0 + one)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        width = np.maximum(0.0, np.minimum(x1[best], x1[rest]) - np.maximum(x0[best], x0[rest]) + one)
        height = np.maximum(0.0, np.minimum(y1[best], y1[rest]) - np.maximum(y0[best], y0[rest]) + one)
        inter = width * height
        iou = inter / (areas[best] + areas[rest] - inter)
        order = rest[iou <= threshold]
    return keep


def multiclass_nms(
    boxes: np.ndarray, scores: np.ndarray, threshold: float, score_threshold: float
) -> np.ndarray:
    """ControlNet/DWPose rule: NMS per class over candidates above ``score_threshold``.
    Returns [K, 6] rows ``x0, y0, x1, y1, score, class`` grouped by class."""
    rows = []
    for cls in range(scores.shape[1]):
        mask = scores[:, cls] > score_threshold
        if not mask.any():
            continue
        cls_boxes, cls_scores = boxes[mask], scores[mask, cls]
        keep = greedy_nms(cls_boxes, cls_scores, threshold, plus_one=True)
        rows.append(
            np.concatenate([cls_boxes[keep], cls_scores[keep, None], np.full((len(keep), 1), cls)], axis=1)
        )
    return np.concatenate(rows) if rows else np.zeros((0, 6))


def select_controlnet(boxes: np.ndarray, scores: np.ndarray) -> Detections:
    dets = multiclass_nms(boxes, scores, threshold=0.45, score_threshold=0.1)
    keep = (dets[:, 4] > 0.3) & (dets[:, 5] == PERSON)
    return Detections(dets[keep, :4], dets[keep, 4])


def batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, threshold: float) -> np.ndarray:
    """mmcv-style class-aware NMS (IoU without +1): kept indices, descending score."""
    if not len(boxes):
        return np.zeros(0, dtype=np.int64)
    # Shifting each class to its own region makes one NMS pass class-aware.
    shifted = boxes + (labels * (boxes.max() + 1.0))[:, None]
    return np.asarray(greedy_nms(shifted, scores, threshold, plus_one=False), dtype=np.int64)


def select_mmpose(boxes: np.ndarray, scores: np.ndarray) -> Detections:
    labels = scores.argmax(axis=1)
    best = scores[np.arange(len(scores)), labels]
    valid = best >= 0.01
    boxes, best, labels = boxes[valid], best[valid], labels[valid]
    keep = batched_nms(boxes, best, labels, threshold=0.65)
    boxes, best, labels = boxes[keep], best[keep], labels[keep]
    person = (labels == PERSON) & (best > 0.5)
    boxes, best = boxes[person], best[person]
    keep = greedy_nms(boxes, best, 0.7, plus_one=True)
    return Detections(boxes[keep], best[keep])


RULES = {"controlnet": select_controlnet, "mmpose": select_mmpose}


def detect(session, image_rgb: np.ndarray, rules: str) -> Detections:
    """Run the detector on one RGB uint8 image and apply ``rules`` ("controlnet" or "mmpose")."""
    tensor, ratio = letterbox(image_rgb)
    name = session.get_inputs()[0].name
    output = session.run(None, {name: tensor[None]})[0][0]
    _, boxes, scores = decode(output, ratio, min_objectness=MIN_OBJECTNESS)
    return RULES[rules](boxes, scores)
