"""ONNX Runtime sessions: CUDA only with onnxruntime-gpu and a GPU, chosen once, a silent fallback logged."""

from __future__ import annotations

import logging

import onnxruntime as ort
import pytest

from predictors.common import onnx
from predictors.common.errors import WeightsError
from tools.tiny_weights import dwpose as part

BOTH = ["CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.fixture(autouse=True)
def fresh_choice():
    """``providers()`` decides once per process; each test decides again."""
    onnx.providers.cache_clear()
    yield
    onnx.providers.cache_clear()


def test_cpu_without_the_cuda_provider(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(onnx, "_gpu_present", lambda: True)
    assert onnx.providers() == ("CPUExecutionProvider",)


def test_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: BOTH)
    monkeypatch.setattr(onnx, "_gpu_present", lambda: False)
    assert onnx.providers() == ("CPUExecutionProvider",)


def test_cuda_first_with_both(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: BOTH)
    monkeypatch.setattr(onnx, "_gpu_present", lambda: True)
    assert onnx.providers() == tuple(BOTH)


def test_the_choice_is_made_once(monkeypatch):
    asked = []
    monkeypatch.setattr(ort, "get_available_providers", lambda: asked.append(1) or BOTH)
    monkeypatch.setattr(onnx, "_gpu_present", lambda: True)
    assert onnx.providers() == onnx.providers() == tuple(BOTH)
    assert asked == [1]


def test_the_provider_in_use_is_read_back_and_logged(tmp_path, caplog):
    path = tmp_path / "det.onnx"
    part.write_detector(path)
    with caplog.at_level(logging.INFO, logger=onnx.__name__):
        cpu = onnx.create_session(path, ["CPUExecutionProvider"], threads=1)
    assert cpu.get_providers() == ["CPUExecutionProvider"]
    assert "det.onnx runs on CPUExecutionProvider" in caplog.text


def test_sessions_default_to_the_chosen_providers(tmp_path, monkeypatch):
    seen = {}

    class Recording(_FallbackSession):
        def __init__(self, path, sess_options, providers):
            seen.update(providers=providers, threads=sess_options.intra_op_num_threads)

    monkeypatch.setattr(ort, "InferenceSession", Recording)
    monkeypatch.setattr(onnx, "providers", lambda: ("CPUExecutionProvider",))
    onnx.create_session(tmp_path / "model.onnx", threads=3)
    assert seen == {"providers": ["CPUExecutionProvider"], "threads": 3}


class _FallbackSession:
    """What ONNX Runtime does when the CUDA provider fails to load: it quietly runs on CPU."""

    def __init__(self, *args, **kwargs):
        pass

    def get_providers(self):
        return ["CPUExecutionProvider"]


def test_a_silent_cuda_fallback_is_reported(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(ort, "InferenceSession", _FallbackSession)
    with caplog.at_level(logging.WARNING, logger=onnx.__name__):
        onnx.create_session(tmp_path / "pose.onnx", BOTH)
    assert "CUDAExecutionProvider did not load, running on CPUExecutionProvider" in caplog.text


def test_a_broken_file_is_a_weights_error_naming_it(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(WeightsError, match=r"^The ONNX model .*broken\.onnx could not be loaded"):
        onnx.create_session(broken, ["CPUExecutionProvider"])
