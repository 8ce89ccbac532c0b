"""The DWPose package's tiny weights and the detector-input resize (sessions: tests/common/test_onnx.py)."""

from __future__ import annotations

from tools.tiny_weights import dwpose as part


def test_tiny_weights_part_builds_against_the_real_manifest(tmp_path):
    from predictors.common.dwpose import DETECTOR_WEIGHTS, POSE_WEIGHTS
    from tools.tiny_weights import build, ensure

    root = build(["dwpose"], cache_dir=tmp_path)
    files = ensure(root, [DETECTOR_WEIGHTS, POSE_WEIGHTS])
    assert (files[DETECTOR_WEIGHTS], files[POSE_WEIGHTS]) == (
        root / part.DETECTOR_DEST,
        root / part.POSE_DEST,
    )
    assert (part.DETECTOR_DEST, part.POSE_DEST) == ("dwpose/yolox_l.onnx", "dwpose/dw-ll_ucoco_384.onnx")


def test_resize_for_detection_matches_musepose_sizes():
    import numpy as np

    from predictors.common.dwpose import resize_for_detection

    # The sizes upstream's detector saw for a 640x360 video frame and a 384x512 reference image.
    assert resize_for_detection(np.zeros((360, 640, 3), np.uint8)).shape == (512, 896, 3)
    assert resize_for_detection(np.zeros((512, 384, 3), np.uint8)).shape == (704, 512, 3)
    assert resize_for_detection(np.zeros((1920, 1080, 3), np.uint8)).shape == (896, 512, 3)
