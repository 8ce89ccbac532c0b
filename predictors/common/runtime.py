"""Where and how models run: logging, device and dtype, seeds, threads, GPU out-of-memory, progress.

Environment overrides (all optional):
- TRIPTYCH_DEVICE: "cpu", "cuda" or "cuda:N" (default: CUDA when a GPU is visible, else CPU).
- TRIPTYCH_DTYPE: "fp32", "fp16" or "bf16" (default: fp16 on CUDA, fp32 on CPU).
- TRIPTYCH_TORCH_THREADS: CPU threads for torch (default: torch's own choice), applied by configure_threads.
- TRIPTYCH_PROGRESS_INTERVAL: seconds between progress lines (default: 0.1 in a terminal, 2 elsewhere).
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from tqdm import tqdm

from predictors.common.errors import InputError, ResourceError

DEVICE_ENV = "TRIPTYCH_DEVICE"
DTYPE_ENV = "TRIPTYCH_DTYPE"
THREADS_ENV = "TRIPTYCH_TORCH_THREADS"
PROGRESS_INTERVAL_ENV = "TRIPTYCH_PROGRESS_INTERVAL"
LOGGER_ROOT = "predictors"
MAX_SEED = 2**32 - 1  # numpy's seed range, the narrowest of the generators a predictor may seed

DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


@dataclass(frozen=True)
class Progress:
    """One step of a core's loop, the one shape every core hands to its ``on_step`` callback.

    ``stage`` names the loop ("scale 1/2", "main", "detail", "denoise", ...); ``step`` counts from 1 to
    ``total`` within it. A core may report more by subclassing (nst adds its losses)."""

    stage: str
    step: int
    total: int


StepCallback = Callable[[Progress], None]

# Substrings of the RuntimeErrors CUDA, cuBLAS/cuDNN and MPS raise when an allocation fails.
_OOM_MARKERS = ("out of memory", "cublas_status_alloc_failed", "cudnn_status_alloc_failed")


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is at emit time (Cog and test runners replace it)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _value) -> None:
        pass


def get_logger(name: str) -> logging.Logger:
    """Logger in the "predictors" hierarchy that prints to stdout, where Cog collects a prediction's logs.

    `get_logger(__name__)` is the usual call. Modules that use `logging.getLogger(__name__)` print through
    the same handler once it is installed; other names are placed under "predictors.".
    """
    root = logging.getLogger(LOGGER_ROOT)
    if not any(isinstance(handler, _StdoutHandler) for handler in root.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    if name == LOGGER_ROOT or name.startswith(LOGGER_ROOT + "."):
        return logging.getLogger(name)
    return logging.getLogger(f"{LOGGER_ROOT}.{name}")


def select_device(override: str | None = None) -> torch.device:
    """`override`, else TRIPTYCH_DEVICE, else CUDA when available, else CPU."""
    requested = (override or os.environ.get(DEVICE_ENV, "")).strip().lower()
    if not requested or requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        device = None
    if device is None or device.type not in {"cpu", "cuda"}:
        raise ValueError(f"{DEVICE_ENV}={requested!r} is not a device we run on; use cpu, cuda or cuda:N.")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ResourceError(
                f"{DEVICE_ENV}={requested!r} asks for a GPU but CUDA is not available here; "
                "run on a GPU host or set it to cpu."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ResourceError(
                f"{DEVICE_ENV}={requested!r} names a GPU that does not exist "
                f"({torch.cuda.device_count()} visible); use cuda or a number below the count."
            )
    return device


def select_dtype(device: torch.device | str, override: str | None = None) -> torch.dtype:
    """`override`, else TRIPTYCH_DTYPE, else fp16 on CUDA and fp32 elsewhere."""
    device = torch.device(device)
    requested = (override or os.environ.get(DTYPE_ENV, "")).strip().lower()
    if not requested or requested == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if requested not in DTYPES:
        raise ValueError(f"{DTYPE_ENV}={requested!r} is not a dtype we support; use fp32, fp16 or bf16.")
    dtype = DTYPES[requested]
    if device.type == "cpu" and dtype == torch.float16:
        # Many CPU kernels lack fp16 and the rest are slower than fp32.
        raise ValueError(f"{DTYPE_ENV}={requested!r} is not supported on the CPU; use fp32 or bf16.")
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ResourceError(f"{DTYPE_ENV}={requested!r}: this GPU has no bf16 support; use fp16 or fp32.")
    return dtype


def resolve_seed(seed: int | None, logger: logging.Logger) -> int:
    """The seed to use: `seed` itself, or a fresh one from os.urandom when None. Logs it either way."""
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "big")
    elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InputError(
            f"The seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}; leave it empty to draw one."
        )
    logger.info("Using seed %d", seed)
    return seed


def configure_threads(n: int | None = None) -> int:
    """Set torch's CPU thread count from `n` or TRIPTYCH_TORCH_THREADS; returns the count in effect.

    Every predictor's setup() calls it first, before anything is loaded or a session is built."""
    if n is None:
        raw = os.environ.get(THREADS_ENV, "").strip()
        if raw:
            try:
                n = int(raw)
            except ValueError:
                raise ValueError(f"{THREADS_ENV}={raw!r} must be a whole number of threads.") from None
    if n is not None:
        if n < 1:
            raise ValueError(f"The torch thread count must be at least 1, got {n}.")
        torch.set_num_threads(n)
    return torch.get_num_threads()


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    message = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(marker in message for marker in _OOM_MARKERS)


def free_accelerator_memory() -> None:
    """Collect garbage and return cached GPU blocks to the driver (a no-op without CUDA)."""
    gc.collect()
    torch.cuda.empty_cache()


@contextmanager
def oom_guard(remedy: str) -> Iterator[None]:
    """Turn a GPU out-of-memory error in the block into a ResourceError that ends with `remedy`.

    The memory is freed first, so the next prediction starts from a clean cache.
    """
    try:
        yield
    except RuntimeError as exc:
        if not _is_out_of_memory(exc):
            raise
        # The traceback's finished frames still hold the failed step's tensors; drop them before freeing.
        traceback.clear_frames(exc.__traceback__)
        get_logger(__name__).warning("Out of memory: %s", str(exc).strip().split("\n")[0])
        free_accelerator_memory()
        raise ResourceError(f"The GPU ran out of memory. {remedy}") from None


def device_works(device: torch.device) -> bool:
    """Whether a small computation on `device` still gives the right answer.

    A CUDA context broken by a device-side assert, an Xid error or a lost GPU fails every later call in the
    process, so a predictor's `healthcheck()` (which Cog runs on GET /health-check while idle and reports
    as UNHEALTHY) returns this, and the serving layer restarts the process.
    """
    try:
        total = (torch.arange(8, device=device, dtype=torch.float32) * 2).sum()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return float(total.item()) == 56.0
    except RuntimeError as exc:
        get_logger(__name__).error("The %s device failed a health check: %s", device, str(exc).split("\n")[0])
        return False


class _LogLineBar(tqdm):
    """tqdm that prints each refresh as a line of its own instead of redrawing one line in place.

    Cog appends whatever a prediction prints to its ``logs``, and clients split those on newlines:
    replicate-python's ``Prediction.Progress`` reads the last line that matches tqdm's format from its start.
    tqdm's carriage-return redraws would put every update on one line, read as its first (stale) value.
    Overriding ``display`` is tqdm's own way to change where a bar goes (its docstring; tqdm.rich does it).
    """

    # tqdm's monitor thread refreshes bars from another thread; here every refresh comes from the loop.
    monitor_interval = 0

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg == "":  # tqdm clearing the bar on close: a printed line stays.
            return False
        self.fp.write(f"{self if msg is None else msg}\n")
        self.fp.flush()
        return True


def progress_interval(interactive: bool) -> float:
    """Seconds between progress lines: TRIPTYCH_PROGRESS_INTERVAL, else 0.1 in a terminal, 2 elsewhere."""
    raw = os.environ.get(PROGRESS_INTERVAL_ENV, "").strip()
    if not raw:
        return 0.1 if interactive else 2.0
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"{PROGRESS_INTERVAL_ENV}={raw!r} must be a number of seconds.") from None
    if not seconds >= 0:
        raise ValueError(f"{PROGRESS_INTERVAL_ENV}={raw!r} must be zero or more seconds.")
    return seconds


@contextmanager
def progress_bar(total: int, *, unit: str = "it") -> Iterator[tqdm]:
    """One tqdm bar on stdout for one long loop; call ``bar.update(n)`` as work is done.

    The lines are tqdm's default format with nothing before the percentage,
    ``" 40%|####      | 12/30 [00:03<00:04, 3.90it/s]"``, which is what Replicate's clients parse into a
    prediction's progress. In a terminal the bar redraws in place. Elsewhere, Cog's worker included (its
    stdout is a pipe: crates/coglet/src/orchestrator.rs), every update is a line of its own, at most one per
    ``progress_interval`` seconds, and the last count is always printed when the block ends (100% when the
    work is done). Exceptions raised in the block, cancellation included, pass through; the bar is closed.
    """
    isatty = getattr(sys.stdout, "isatty", None)
    interactive = bool(isatty and isatty())
    bar_class = tqdm if interactive else _LogLineBar
    bar = bar_class(
        total=total,
        unit=unit,
        file=sys.stdout,
        mininterval=progress_interval(interactive),
        miniters=1,
        ascii=not interactive,
        dynamic_ncols=interactive,
        # A terminal keeps the final bar; as log lines, the last one is printed below instead.
        leave=interactive,
    )
    try:
        yield bar
    finally:
        if not interactive and bar.n != bar.last_print_n:
            bar.refresh()
        bar.close()
