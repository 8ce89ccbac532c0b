"""Execution providers: CUDA only with onnxruntime-gpu and a GPU, and a silent fallback is reported."""

from __future__ import annotations

import logging

import onnxruntime as ort

from predictors.common.dwpose import session as session_module
from tools.tiny_weights import dwpose as part


def test_cpu_without_the_cuda_provider(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(session_module, "_gpu_present", lambda: True)
    assert session_module.choose_providers() == ["CPUExecutionProvider"]


def test_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    monkeypatch.setattr(session_module, "_gpu_present", lambda: False)
    assert session_module.choose_providers() == ["CPUExecutionProvider"]


def test_cuda_first_with_both(monkeypatch):
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    monkeypatch.setattr(session_module, "_gpu_present", lambda: True)
    assert session_module.choose_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_the_provider_in_use_is_read_back_and_logged(tmp_path, caplog):
    path = tmp_path / "det.onnx"
    part.write_detector(path)
    with caplog.at_level(logging.INFO, logger=session_module.__name__):
        cpu = session_module.create_session(path, ["CPUExecutionProvider"])
    assert cpu.get_providers() == ["CPUExecutionProvider"]
    assert "det.onnx runs on CPUExecutionProvider" in caplog.text


class _FallbackSession:
    """What ONNX Runtime does when the CUDA provider fails to load: it quietly runs on CPU."""

    def __init__(self, *args, **kwargs):
        pass

    def get_providers(self):
        return ["CPUExecutionProvider"]


def test_a_silent_cuda_fallback_is_reported(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(ort, "InferenceSession", _FallbackSession)
    with caplog.at_level(logging.WARNING, logger=session_module.__name__):
        session_module.create_session(
            tmp_path / "pose.onnx", ["CUDAExecutionProvider", "CPUExecutionProvider"]
        )
    assert "CUDAExecutionProvider did not load, running on CPUExecutionProvider" in caplog.text


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
