"""predictors.common.runtime: device/dtype choice, seeds, threads, OOM guard, progress, logging."""

from __future__ import annotations

import logging
import weakref

import pytest
import torch

from predictors.common import runtime
from predictors.common.errors import InputError, ResourceError
from predictors.common.runtime import (
    configure_threads,
    get_logger,
    oom_guard,
    progress,
    resolve_seed,
    select_device,
    select_dtype,
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in (runtime.DEVICE_ENV, runtime.DTYPE_ENV, runtime.THREADS_ENV):
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


def test_select_device_applies_the_thread_setting(monkeypatch, no_gpu):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv(runtime.THREADS_ENV, "2")
        assert select_device() == torch.device("cpu")
        assert torch.get_num_threads() == 2
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


def test_progress_yields_everything_and_reports_on_stdout(capsys):
    assert list(progress(range(5), desc="steps")) == [0, 1, 2, 3, 4]
    out = capsys.readouterr().out
    assert "steps" in out and "5/5" in out


def test_progress_never_swallows_cancellation(capsys):
    class Cancelled(BaseException):
        pass

    seen = []
    with pytest.raises(Cancelled):
        for item in progress(iter(range(100)), total=100, desc="denoise"):
            seen.append(item)
            if item == 3:
                raise Cancelled()
    assert seen == [0, 1, 2, 3]
    assert "denoise" in capsys.readouterr().out


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
