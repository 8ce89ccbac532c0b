"""predictors.common.runtime: device/dtype choice, seeds, threads, OOM guard, progress, logging."""

from __future__ import annotations

import logging
import subprocess
import sys
import weakref

import pytest
import torch

from predictors.common import runtime
from predictors.common.errors import InputError, ResourceError
from predictors.common.runtime import (
    configure_threads,
    get_logger,
    oom_guard,
    progress_bar,
    resolve_seed,
    select_device,
    select_dtype,
)
from tests.conftest import REPO_ROOT
from tests.replicate_progress import PATTERN, progress_lines


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in (runtime.DEVICE_ENV, runtime.DTYPE_ENV, runtime.THREADS_ENV, runtime.PROGRESS_INTERVAL_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


# ---- logging ---------------------------------------------------------------------------------------------


def test_logger_writes_to_stdout_under_the_package_name(capsys):
    logger = get_logger("predictors.nst.predict")
    assert logger.name == "predictors.nst.predict"
    assert get_logger("bench").name == "predictors.bench"
    logger.info("hello from the logger")
    # A module logger made with plain logging.getLogger(__name__) prints through the same handler.
    logging.getLogger("predictors.common.weights").info("hello from weights")
    captured = capsys.readouterr()
    assert "predictors.nst.predict: hello from the logger" in captured.out
    assert "predictors.common.weights: hello from weights" in captured.out
    assert "hello" not in captured.err
    get_logger("again")
    handlers = logging.getLogger(runtime.LOGGER_ROOT).handlers
    assert sum(isinstance(h, runtime._StdoutHandler) for h in handlers) == 1


# ---- device and dtype ------------------------------------------------------------------------------------


def test_device_defaults_follow_cuda_availability(no_gpu):
    assert select_device() == torch.device("cpu")


def test_device_prefers_cuda_when_present(one_gpu):
    assert select_device() == torch.device("cuda")


def test_device_override_and_env(monkeypatch, one_gpu):
    monkeypatch.setenv(runtime.DEVICE_ENV, "cpu")
    assert select_device() == torch.device("cpu")
    assert select_device("cuda:0") == torch.device("cuda:0")


@pytest.mark.parametrize("value", ["tpu", "mps", "gpu0"])
def test_device_env_rejects_unknown_values(monkeypatch, value):
    monkeypatch.setenv(runtime.DEVICE_ENV, value)
    with pytest.raises(ValueError, match=rf"TRIPTYCH_DEVICE='{value}' is not a device we run on"):
        select_device()


def test_device_env_cuda_without_gpu_is_a_clear_error(monkeypatch, no_gpu):
    monkeypatch.setenv(runtime.DEVICE_ENV, "cuda")
    with pytest.raises(ResourceError, match="CUDA is not available"):
        select_device()


def test_device_index_beyond_the_visible_gpus(one_gpu):
    with pytest.raises(ResourceError, match="1 visible"):
        select_device("cuda:3")


def test_dtype_defaults():
    assert select_dtype("cpu") == torch.float32
    assert select_dtype(torch.device("cuda")) == torch.float16


def test_dtype_env_and_override(monkeypatch):
    monkeypatch.setenv(runtime.DTYPE_ENV, "bf16")
    assert select_dtype("cpu") == torch.bfloat16
    assert select_dtype("cpu", "fp32") == torch.float32
    monkeypatch.setenv(runtime.DTYPE_ENV, "float16")
    assert select_dtype("cuda") == torch.float16


def test_dtype_env_errors(monkeypatch):
    monkeypatch.setenv(runtime.DTYPE_ENV, "int8")
    with pytest.raises(ValueError, match="TRIPTYCH_DTYPE='int8' is not a dtype we support"):
        select_dtype("cpu")
    monkeypatch.setenv(runtime.DTYPE_ENV, "fp16")
    with pytest.raises(ValueError, match="not supported on the CPU"):
        select_dtype("cpu")


def test_bf16_on_a_gpu_without_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    with pytest.raises(ResourceError, match="no bf16 support"):
        select_dtype("cuda", "bf16")


# ---- seeds -----------------------------------------------------------------------------------------------


def test_none_seed_is_drawn_from_urandom_and_logged(monkeypatch, caplog):
    monkeypatch.setattr(runtime.os, "urandom", lambda n: bytes([0, 0, 1, 2][:n]))
    logger = get_logger("seeds")
    with caplog.at_level(logging.INFO, logger="predictors"):
        seed = resolve_seed(None, logger)
    assert seed == 258
    assert "Using seed 258" in caplog.text


def test_drawn_seeds_differ_and_fit_every_generator():
    logger = get_logger("seeds")
    seeds = {resolve_seed(None, logger) for _ in range(8)}
    assert len(seeds) > 1
    assert all(0 <= s <= runtime.MAX_SEED for s in seeds)


def test_given_seed_is_kept_and_logged(caplog):
    with caplog.at_level(logging.INFO, logger="predictors"):
        assert resolve_seed(42, get_logger("seeds")) == 42
    assert "Using seed 42" in caplog.text
    # Both ends of numpy's range are valid seeds.
    assert resolve_seed(0, get_logger("seeds")) == 0
    assert resolve_seed(2**32 - 1, get_logger("seeds")) == 2**32 - 1


@pytest.mark.parametrize("bad", [-1, 2**32, True, 1.5])
def test_invalid_seeds_are_refused(bad):
    with pytest.raises(
        InputError, match=r"^The seed must be a whole number from 0 to 4294967295, got .*empty"
    ):
        resolve_seed(bad, get_logger("seeds"))


# ---- threads ---------------------------------------------------------------------------------------------


def test_configure_threads_from_argument_and_env(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert configure_threads(2) == 2 == torch.get_num_threads()
        monkeypatch.setenv(runtime.THREADS_ENV, "1")
        assert configure_threads() == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_select_device_leaves_the_threads_alone(monkeypatch, no_gpu):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        monkeypatch.setenv(runtime.THREADS_ENV, "2")
        assert select_device() == torch.device("cpu")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_configure_threads_errors(monkeypatch):
    monkeypatch.setenv(runtime.THREADS_ENV, "lots")
    with pytest.raises(ValueError, match="TRIPTYCH_TORCH_THREADS='lots' must be a whole number"):
        configure_threads()
    with pytest.raises(ValueError, match="at least 1"):
        configure_threads(0)


# ---- out of memory ---------------------------------------------------------------------------------------


def test_oom_becomes_resource_error_after_freeing_and_the_next_run_works(monkeypatch):
    held: list[weakref.ref] = []
    freed_at_empty_cache: list[bool] = []
    monkeypatch.setattr(
        torch.cuda, "empty_cache", lambda: freed_at_empty_cache.append(all(r() is None for r in held))
    )

    def step():
        activations = torch.ones(1024)
        held.append(weakref.ref(activations))
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    with pytest.raises(ResourceError) as info, oom_guard("Lower max_size or num_frames."):
        step()
    assert str(info.value) == "The GPU ran out of memory. Lower max_size or num_frames."
    assert info.value.__cause__ is None and info.value.__suppress_context__
    # The cache was emptied once, after the failed step's tensors were released.
    assert freed_at_empty_cache == [True]

    with oom_guard("unused"):
        result = torch.ones(2, 2) @ torch.ones(2, 2)
    assert torch.equal(result, torch.full((2, 2), 2.0))


def test_cuda_out_of_memory_runtime_error_is_recognised(monkeypatch):
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    with pytest.raises(ResourceError, match=r"Use fewer frames\."), oom_guard("Use fewer frames."):
        raise RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported")


def test_other_errors_pass_through_the_guard():
    with pytest.raises(RuntimeError, match="shape mismatch"), oom_guard("unused"):
        raise RuntimeError("shape mismatch")

    class Cancelled(BaseException):
        pass

    with pytest.raises(Cancelled), oom_guard("unused"):
        raise Cancelled()


# ---- progress --------------------------------------------------------------------------------------------


def _bar_lines(out: str) -> list[str]:
    assert "\r" not in out
    return out.splitlines()


def test_every_update_is_a_line_the_replicate_client_parses(monkeypatch, capsys):
    monkeypatch.setenv(runtime.PROGRESS_INTERVAL_ENV, "0")
    with progress_bar(4, unit="step") as bar:
        for _ in range(4):
            bar.update(1)
    lines = _bar_lines(capsys.readouterr().out)
    assert [PATTERN.match(line).group("percentage", "current", "total") for line in lines] == [
        ("0", "0", "4"),
        ("25", "1", "4"),
        ("50", "2", "4"),
        ("75", "3", "4"),
        ("100", "4", "4"),
    ]
    assert all(line.endswith("step/s]") for line in lines)


def test_updates_within_the_interval_are_skipped_but_the_last_count_is_printed(monkeypatch, capsys):
    monkeypatch.setenv(runtime.PROGRESS_INTERVAL_ENV, "3600")
    with progress_bar(30) as bar:
        for _ in range(10):
            bar.update(3)
    assert progress_lines(capsys.readouterr().out) == [(0, 0, 30), (100, 30, 30)]


def test_a_bar_never_swallows_cancellation_and_shows_where_it_stopped(monkeypatch, capsys):
    monkeypatch.setenv(runtime.PROGRESS_INTERVAL_ENV, "3600")

    class Cancelled(BaseException):
        pass

    with pytest.raises(Cancelled), progress_bar(100) as bar:
        for step in range(100):
            bar.update(1)
            if step == 3:
                raise Cancelled()
    assert progress_lines(capsys.readouterr().out) == [(0, 0, 100), (4, 4, 100)]


def test_a_terminal_gets_one_bar_redrawn_in_place(monkeypatch, capsys):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    with progress_bar(3) as bar:
        bar.update(3)
    out = capsys.readouterr().out
    assert out.startswith("\r") and "3/3" in out
    assert out.count("\n") == 1


@pytest.mark.parametrize(
    ("raw", "interactive", "seconds"), [("", True, 0.1), ("", False, 2.0), (" 0.5 ", False, 0.5)]
)
def test_progress_interval(monkeypatch, raw, interactive, seconds):
    monkeypatch.setenv(runtime.PROGRESS_INTERVAL_ENV, raw)
    assert runtime.progress_interval(interactive) == seconds


@pytest.mark.parametrize("raw", ["soon", "-1", "nan"])
def test_bad_progress_interval_is_named(monkeypatch, raw):
    monkeypatch.setenv(runtime.PROGRESS_INTERVAL_ENV, raw)
    with pytest.raises(ValueError, match=runtime.PROGRESS_INTERVAL_ENV):
        runtime.progress_interval(False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_real_cuda_oom_is_recovered():
    device = torch.device("cuda")
    baseline = torch.cuda.memory_allocated(device)
    with pytest.raises(ResourceError, match=r"Lower max_size\."), oom_guard("Lower max_size."):
        kept = torch.ones(1024, device=device)
        torch.empty(2**48, dtype=torch.uint8, device=device)
    del kept
    assert torch.cuda.memory_allocated(device) == baseline
    with oom_guard("unused"):
        assert torch.ones(256, device=device).sum().item() == 256


def test_a_working_device_passes_the_health_check():
    assert runtime.device_works(torch.device("cpu")) is True


def test_a_device_that_cannot_compute_fails_the_health_check(caplog):
    # The meta device has no storage: reading a result raises, as every call does on a broken CUDA context.
    assert runtime.device_works(torch.device("meta")) is False
    assert "failed a health check" in caplog.text


CUDA_CONTEXT_BREAKER = """
import torch
from predictors.common import runtime
from tests.conftest import REPO_ROOT
device = torch.device("cuda")
assert runtime.device_works(device)
try:
    torch.ones(4, device=device)[torch.tensor([10], device=device)].sum().item()  # device-side assert
except RuntimeError:
    pass
print("healthy" if runtime.device_works(device) else "broken")
"""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_context_broken_by_a_device_side_assert_fails_the_health_check():
    # In a child process: a device-side assert leaves the whole process's CUDA context unusable.
    done = subprocess.run(
        [sys.executable, "-c", CUDA_CONTEXT_BREAKER],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )
    assert done.stdout.strip().splitlines()[-1] == "broken", done.stderr[-2000:]
