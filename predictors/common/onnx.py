"""ONNX Runtime sessions for every model the project runs on it (the nst fast start, DWPose).

The providers are chosen once per process: CUDA first where onnxruntime-gpu offers it AND a GPU is present
(onnxruntime-gpu lists its CUDA provider on a machine without a GPU too), else the CPU. A CUDA provider that
fails to load (a missing cuDNN, a driver too old) makes ONNX Runtime fall back to the CPU without an error,
so each session reads back the providers it really got and logs a warning when it lost the first choice.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import onnxruntime as ort

from predictors.common.errors import WeightsError

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# ONNX Runtime's own warnings (unused initialisers, shape hints) are noise in a prediction's logs.
ORT_LOG_ERRORS_ONLY = 3

logger = logging.getLogger(__name__)


def _gpu_present() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@functools.cache
def providers() -> tuple[str, ...]:
    """CUDA then CPU where onnxruntime offers CUDA and a GPU is present, else CPU only (decided once)."""
    if CUDA in ort.get_available_providers() and _gpu_present():
        return (CUDA, CPU)
    return (CPU,)


def create_session(
    path: str | Path, wanted: tuple[str, ...] | list[str] | None = None, threads: int | None = None
) -> ort.InferenceSession:
    """An ``InferenceSession`` for ``path`` on ``wanted`` (default: ``providers()``), with ``threads``
    intra-op threads when given. A file ONNX Runtime cannot load is a WeightsError that names it."""
    path = Path(path)
    wanted = list(wanted or providers())
    options = ort.SessionOptions()
    options.log_severity_level = ORT_LOG_ERRORS_ONLY
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=wanted)
    except Exception as error:  # ONNX Runtime raises its own exception types for a missing or broken file
        raise WeightsError(f"The ONNX model {path} could not be loaded ({error}).") from None
    active = session.get_providers()
    if wanted[0] not in active:
        logger.warning("%s: %s did not load, running on %s", path.name, wanted[0], active[0])
    else:
        logger.info("%s runs on %s", path.name, active[0])
    return session
