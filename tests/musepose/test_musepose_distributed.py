"""MusePose's window-parallel path on gloo worker processes (the CPU stands in for the GPUs), on tiny weights:
the same videos as one process for 2 and 3 ranks, a killed worker, a cancel that reaches every rank, and a
decode whose reader leaves."""

from __future__ import annotations

import ctypes
import os
import signal
import threading
from contextlib import contextmanager
from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image

from predictors.musepose.distributed import DistributedPipeline, Team, WorkerError, build_pipeline
from tools.tiny_weights import environment

# All in one process: a process holds one torch.distributed group, and one forkserver serves every team.
pytestmark = pytest.mark.xdist_group("musepose-distributed")

SIZE = 64
SETTINGS = {"steps": 2, "guidance": 3.5, "window": 4, "overlap": 1}
SEED = 7
# float32 on both sides; only the order of sums over ranks may differ (frames in three or more windows).
TOLERANCE = 1e-5
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def files(tiny_weights):
    from predictors.musepose.predict import ensure_weights, pipeline_files

    root = tiny_weights(["dwpose", "musepose"])
    with pytest.MonkeyPatch.context() as patch:
        for key, value in environment(root).items():
            patch.setenv(key, value)
        return pipeline_files(ensure_weights())


@pytest.fixture(scope="module")
def single(files):
    return build_pipeline(files, torch.float32, CPU)


@pytest.fixture(scope="module")
def encoding(single):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    return single.encode_reference(image, SIZE, SIZE)


def poses(frames: int) -> np.ndarray:
    return np.random.default_rng(frames).integers(0, 256, (frames, SIZE, SIZE, 3), dtype=np.uint8)


def generate(pipeline, encoding, frames: int, **changes) -> tuple[torch.Tensor, torch.Tensor]:
    latents = pipeline.denoise(
        poses(frames), encoding, generator=torch.Generator().manual_seed(SEED), **{**SETTINGS, **changes}
    )
    return latents, torch.cat(list(pipeline.decode(latents, 4)))


@pytest.fixture(scope="module")
def expected(single, encoding):
    """One process's (latents, videos) per frame count, computed once."""
    cache = {}

    def get(frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        if frames not in cache:
            cache[frames] = generate(single, encoding, frames)
        return cache[frames]

    return get


@pytest.fixture(scope="module")
def distributed(files, single):
    """``distributed(ranks)``: a DistributedPipeline on that many gloo ranks (one team at a time)."""
    current: dict[int, DistributedPipeline] = {}

    def get(ranks: int) -> DistributedPipeline:
        if ranks not in current:
            for pipeline in current.values():
                pipeline.team.close()
            current.clear()
            team = Team(partial(build_pipeline, files, torch.float32), [CPU] * ranks)
            team.start()
            team.wait_ready()
            current[ranks] = DistributedPipeline(single, team)
        return current[ranks]

    yield get
    for pipeline in current.values():
        pipeline.team.close()


@contextmanager
def after_each_rank0_unet_call(pipeline: DistributedPipeline, hook):
    """Run ``hook`` after every denoising-UNet call of rank 0 (this process)."""
    handle = pipeline.local.models.denoising_unet.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def assert_same(ours: tuple[torch.Tensor, torch.Tensor], theirs: tuple[torch.Tensor, torch.Tensor]) -> None:
    for mine, wanted in zip(ours, theirs, strict=True):
        assert mine.shape == wanted.shape
        assert (mine - wanted).abs().max().item() <= TOLERANCE


# Window 4, overlap 1: 4, 7, 10 and 13 frames give 1, 2, 3 and 4 windows per step; ``calls`` counts each
# rank's UNet calls over the 2 steps, which shows how the windows were shared.
@pytest.mark.parametrize(
    ("frames", "calls"),
    [(4, [2, 0]), (7, [2, 2]), (10, [4, 2])],  # fewer windows than ranks, as many, more
)
def test_two_processes_give_one_process_videos(distributed, expected, encoding, frames, calls):
    pipeline = distributed(2)
    assert_same(generate(pipeline, encoding, frames), expected(frames))
    assert pipeline.unet_calls == calls


def test_a_worker_killed_mid_step_fails_clearly_and_the_next_run_restarts(distributed, expected, encoding):
    pipeline = distributed(2)
    victim = pipeline.team.workers[0].process

    def kill_once(module, args, output) -> None:
        if victim.is_alive():
            os.kill(victim.pid, signal.SIGKILL)

    with after_each_rank0_unet_call(pipeline, kill_once), pytest.raises(WorkerError) as raised:
        generate(pipeline, encoding, 7)
    assert str(raised.value) == (
        "The MusePose worker on cpu (rank 1) stopped unexpectedly (was killed by signal 9); this prediction "
        "failed, and the workers restart with the next one."
    )
    assert not pipeline.team.workers
    assert_same(generate(pipeline, encoding, 7), expected(7))
    assert pipeline.team.workers[0].process.pid != victim.pid
    assert pipeline.unet_calls == [2, 2]


@pytest.mark.parametrize(
    ("frames", "calls"),
    [(7, [2, 2, 0]), (10, [2, 2, 2]), (13, [4, 2, 2])],  # fewer windows than ranks, as many, more
)
def test_three_processes_give_one_process_videos(distributed, expected, encoding, frames, calls):
    pipeline = distributed(3)
    assert_same(generate(pipeline, encoding, frames), expected(frames))
    assert pipeline.unet_calls == calls


def test_cancel_reaches_every_rank_within_the_step(distributed, expected, encoding):
    """Cog's cancel: CancelationException raised asynchronously in the predicting thread
    (crates/coglet-python/src/cancel.rs), here right after rank 0's first UNet call."""
    from cog import CancelationException

    pipeline = distributed(3)
    pids = [worker.process.pid for worker in pipeline.team.workers]
    caller: dict[str, object] = {}

    def cancel_once(module, args, output) -> None:
        if "sent" not in caller:
            caller["sent"] = True
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(caller["thread"]), ctypes.py_object(CancelationException)
            )
            # The caller's wait turns the cancel into the stop flag that every rank reads.
            assert pipeline.team.stop.wait(30)

    def predict() -> None:
        caller["thread"] = threading.get_ident()
        try:
            generate(pipeline, encoding, 13, steps=3)
        except BaseException as exc:
            caller["raised"] = exc

    thread = threading.Thread(target=predict)
    with after_each_rank0_unet_call(pipeline, cancel_once):
        thread.start()
        thread.join(120)
    assert isinstance(caller.get("raised"), CancelationException)
    assert pipeline.team.outcomes == ["stopped", "stopped"]
    # 4 windows on 3 ranks: 2, 1, 1 UNet calls per step, 6, 3, 3 for the 3 steps. Rank 0 stopped after its
    # first call, the others within their window of the first step.
    assert pipeline.unet_calls[0] == 1
    assert pipeline.unet_calls[1] <= 1 and pipeline.unet_calls[2] <= 1
    # Nobody was restarted, and the next run is whole.
    assert [worker.process.pid for worker in pipeline.team.workers] == pids
    assert_same(generate(pipeline, encoding, 7), expected(7))


def test_a_reader_that_leaves_stops_the_decode_on_every_rank(distributed, expected, encoding):
    pipeline = distributed(3)
    latents, videos = expected(13)
    frames = pipeline.decode(latents, 1)
    first = next(frames)
    torch.testing.assert_close(first, videos[:1], rtol=0, atol=TOLERANCE)
    frames.close()  # as when the writer fails: the workers end the job instead of decoding the rest
    assert pipeline.team.outcomes == ["stopped", "stopped"]
    assert all(worker.process.is_alive() for worker in pipeline.team.workers)
    assert_same(generate(pipeline, encoding, 4), expected(4))
