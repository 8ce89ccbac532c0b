"""YOLOX pre/post-processing and the two detection rule sets."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from predictors.common.dwpose.detector import (
    ANCHORS_PER_STRIDE,
    decode,
    detect,
    greedy_nms,
    letterbox,
    select_controlnet,
    select_mmpose,
)
from tools.tiny_weights import dwpose as part


def test_letterbox_top_left_pad_114_raw_values():
    image = np.full((400, 800, 3), 7, dtype=np.uint8)
    tensor, ratio = letterbox(image)
    assert ratio == 0.8
    assert tensor.shape == (3, 640, 640) and tensor.dtype == np.float32
    assert (tensor[:, :320, :] == 7).all()  # resized content, raw 0-255 values
    assert (tensor[:, 320:, :] == 114).all()  # padding below


class _Recorder:
    """A detector session that records its input and returns an empty anchor table."""

    def __init__(self):
        self.fed = None

    def get_inputs(self):
        return [type("Input", (), {"name": "images"})()]

    def run(self, _, feeds):
        self.fed = feeds["images"]
        return [np.zeros((1, 8400, 85), dtype=np.float32)]


def test_detector_sees_bgr():
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    image[..., 0] = 200  # red in RGB
    session = _Recorder()
    detect(session, image, "controlnet")
    assert session.fed.shape == (1, 3, 640, 640)
    assert session.fed[0, 2, 0, 0] == 200 and session.fed[0, 0, 0, 0] == 0


@pytest.mark.parametrize("stride_index", [0, 1, 2])
def test_grid_decode_each_stride(stride_index):
    stride = (8, 16, 32)[stride_index]
    side = 640 // stride
    gx, gy = 3, 5
    anchor = sum(ANCHORS_PER_STRIDE[:stride_index]) + gy * side + gx
    output = np.zeros((8400, 85), dtype=np.float32)
    output[anchor, :4] = [0.5, 0.25, np.log(4.0), np.log(2.0)]
    output[anchor, 4], output[anchor, 5 + 3] = 0.8, 0.5
    anchors, boxes, scores = decode(output, ratio=0.5)
    assert len(anchors) == 8400
    cx, cy = (gx + 0.5) * stride, (gy + 0.25) * stride
    w, h = 4 * stride, 2 * stride
    np.testing.assert_allclose(
        boxes[anchor], np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]) / 0.5
    )
    assert scores[anchor, 3] == pytest.approx(0.4)
    assert scores.shape == (8400, 80)
    kept, kept_boxes, kept_scores = decode(output, ratio=0.5, min_objectness=0.01)
    assert kept.tolist() == [anchor]
    np.testing.assert_array_equal(kept_boxes[0], boxes[anchor])
    np.testing.assert_array_equal(kept_scores[0], scores[anchor])


def test_nms_plus_one_changes_the_overlap():
    boxes = np.array([[0, 0, 9, 9], [5, 0, 14, 9]], dtype=float)
    scores = np.array([0.9, 0.8])
    # Without +1: inter 4x9=36, union 81+81-36=126 -> IoU 0.286; with +1: 5x10=50 / 150 -> 0.333.
    assert greedy_nms(boxes, scores, 0.3, plus_one=False) == [0, 1]
    assert greedy_nms(boxes, scores, 0.3, plus_one=True) == [0]


def _scene():
    """Anchors (boxes in pixels, 80 class scores) on which the two rule sets disagree."""
    rows = [
        ([100, 100, 200, 400], {0: 0.9}),  # a clear person
        ([105, 95, 205, 420], {0: 0.6}),  # overlaps it with IoU ~0.86: a duplicate for both rule sets
        ([400, 100, 500, 400], {0: 0.45}),  # a weak person: > 0.3 but not > 0.5
        ([600, 100, 700, 400], {0: 0.4, 5: 0.6}),  # person is not its best class
        ([160, 100, 260, 400], {0: 0.7}),  # IoU with the first ~0.25 (kept by both)
        ([120, 150, 220, 450], {0: 0.8}),  # IoU with the first 0.5 (> 0.45, < 0.65): the NMS rules differ
    ]
    boxes = np.array([box for box, _ in rows], dtype=np.float32)
    scores = np.zeros((len(rows), 80), dtype=np.float32)
    for i, (_, classes) in enumerate(rows):
        for cls, value in classes.items():
            scores[i, cls] = value
    return boxes, scores


def test_controlnet_rules():
    found = select_controlnet(*_scene())
    np.testing.assert_allclose(found.scores, [0.9, 0.7, 0.45, 0.4], rtol=1e-6)


def test_mmpose_rules():
    found = select_mmpose(*_scene())
    # Best class only (the 0.4/0.6 anchor is class 5), score > 0.5, NMS at 0.65 then mmpose's 0.7.
    np.testing.assert_allclose(found.scores, [0.9, 0.8, 0.7], rtol=1e-6)
    np.testing.assert_allclose(found.boxes[1], [120, 150, 220, 450])


def test_no_detection_gives_empty_arrays():
    boxes = np.zeros((8400, 4), dtype=np.float32)
    scores = np.zeros((8400, 80), dtype=np.float32)
    for select in (select_controlnet, select_mmpose):
        found = select(boxes, scores)
        assert found.boxes.shape == (0, 4) and found.scores.shape == (0,)


@pytest.mark.parametrize("rules", ["mmpose", "controlnet"])
def test_tiny_detector_sees_nobody_in_a_black_image(tmp_path, rules):
    part.write_detector(tmp_path / "det.onnx")
    session = ort.InferenceSession(str(tmp_path / "det.onnx"), providers=["CPUExecutionProvider"])
    # 128x96 letterboxes at ratio 5 into 480x640 of content beside grey padding.
    black = detect(session, np.zeros((128, 96, 3), np.uint8), rules)
    assert black.boxes.shape == (0, 4) and black.scores.shape == (0,)
    photo = np.random.default_rng(0).integers(0, 256, (128, 96, 3), dtype=np.uint8)
    found = detect(session, photo, rules)
    cx, cy, width, height, obj, cls = part.PERSON
    box = np.array([cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2]) / 5
    np.testing.assert_allclose(found.boxes, [box], atol=1e-3)
    np.testing.assert_allclose(found.scores, [obj * cls], rtol=1e-6)
