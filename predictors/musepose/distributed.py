"""MusePose on several GPUs: each denoising step's windows shared out over one process per GPU.

Why the result is the one-GPU result: within a step the windows are independent given the step's latents;
the loop only sums their predictions into a frame buffer and counts the visits. So each process (rank) runs
its share of the windows into zeroed buffers, the buffers are summed over the ranks (one all-reduce per
step), and every rank takes the same scheduler step on the same sums: all ranks hold the same latents after
every step. Only the order of the sums can differ (frames covered by three or more windows), by a rounding
step. The visits are all-reduced with the predictions (the same buffer), so nothing assumes how the windows
were shared.

- Windows go to ranks by frame count (``split_windows``): the longest first, each to the least loaded rank.
  The padded windows all have the same length, so that is round robin, and the step's time is
  ``ceil(windows / ranks)`` UNet calls.
- Every rank runs the ReferenceNet itself (it is one UNet2D call on one image, run by all ranks at the same
  time): receiving the features from rank 0 would add the transfer to the same wait (``bench/musepose.py``
  measures both).
- The VAE decode is shared by frames (``decode_rounds``): in each round every rank decodes its slice of the
  next ``ranks x chunk`` frames, rank 0 gathers them and hands them on in order, so the video encoder keeps
  streaming while memory stays at one round.

Processes: rank 0 is the predictor's own process; ``Team`` starts one worker process per further GPU
(``forkserver``: the workers fork from a server that imported this module once, and CUDA, never initialised
in that server, works in each of them). Each worker loads the models once and then serves jobs from a queue.
The ranks meet on ``torch.distributed`` through a TCPStore on 127.0.0.1 whose port the OS picks, with NCCL
on GPUs and gloo on the CPU. Under Cog the workers' output joins the predictor's logs: Cog gives child
processes capture pipes as stdout and stderr, never its control channel
(``crates/coglet/src/fd_redirect.rs``).

Rules that keep the ranks in step:
- A job is the same sequence of collectives on every rank, and no rank leaves one out. To stop (cancel, or
  rank 0's reader gone), a rank raises the flag that travels in its next collective; after it, every rank
  sees the same sum and all stop together (``Stopped``), ready for the next job.
- An error on any rank ends the team: the others may be waiting in a collective for it. Rank 0 watches the
  workers while it waits (``Share.check``); the prediction fails with the worker's message, the workers are
  stopped, and the next job starts a fresh team.
- Rank 0's part of a job runs on a thread of its own and the calling thread only waits for it. Cog cancels a
  prediction by raising ``CancelationException`` in the predicting thread at any bytecode
  (``crates/coglet-python/src/cancel.rs``: ``PyThreadState_SetAsyncExc``); here it lands in that wait, which
  turns it into the stop flag, and never in the middle of a collective. The workers check the same flag
  before every UNet call and every decode round.

Environment: ``TRIPTYCH_MUSEPOSE_RANKS`` sets the number of ranks (default: every visible GPU when the device
is CUDA, else 1). On a CPU it starts gloo worker processes on the CPU, which is how the tests run this path.
"""

from __future__ import annotations

import datetime
import itertools
import logging
import multiprocessing
import os
import queue
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing

from predictors.common.errors import TriptychError
from predictors.common.runtime import StepCallback
from predictors.musepose.allocator import keep_freed_memory
from predictors.musepose.models.loading import load_models
from predictors.musepose.pipeline import VAE_FACTOR, MusePosePipeline, ReferenceEncoding, context_windows

RANKS_ENV = "TRIPTYCH_MUSEPOSE_RANKS"
# Waits are sliced: a collective is polled every POLL_SECONDS (rank 0 checks that its workers live between
# polls), replies and rank 0's thread every WAIT_SECONDS (the calling thread can take a cancel between them).
POLL_SECONDS = 0.002
WAIT_SECONDS = 0.05
# Only a hung rank ever reaches this: rank 0 notices dead workers itself.
GROUP_TIMEOUT = datetime.timedelta(minutes=30)
# How long a worker may take to leave when asked to, and how long a broken connection waits for the exit of
# the worker behind it to show, so that the error can name it.
EXIT_GRACE_SECONDS = 10.0

T = TypeVar("T")

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------
# Plans, as pure functions


def split_windows(windows: Sequence[Sequence[int]], ranks: int) -> list[list[int]]:
    """Window indices per rank, balanced by frame count and the same on every rank.

    Longest window first (ties: lower index first), each to the rank with the fewest frames so far (ties:
    lower rank); each rank's indices in ascending order.
    """
    loads = [0] * ranks
    shares: list[list[int]] = [[] for _ in range(ranks)]
    for index in sorted(range(len(windows)), key=lambda i: (-len(windows[i]), i)):
        rank = min(range(ranks), key=lambda r: (loads[r], r))
        shares[rank].append(index)
        loads[rank] += len(windows[index])
    return [sorted(indices) for indices in shares]


def decode_rounds(frames: int, ranks: int, chunk: int) -> list[list[tuple[int, int]]]:
    """Per round, each rank's frame slice [start, stop): a round covers the next ``ranks * chunk`` frames,
    split as evenly as possible in rank order (the last round may leave slices empty)."""
    rounds = []
    for start in range(0, frames, ranks * chunk):
        count = min(ranks * chunk, frames - start)
        bounds = [start + count * rank // ranks for rank in range(ranks + 1)]
        rounds.append(list(itertools.pairwise(bounds)))
    return rounds


def describe_split(windows: Sequence[Sequence[int]], ranks: int, unit: str) -> str:
    """One log line: which windows (1-based) each rank runs per step, and their frames; ``unit`` names a
    rank ("GPU", "process")."""
    parts = []
    for rank, indices in enumerate(split_windows(windows, ranks)):
        frames = sum(len(windows[index]) for index in indices)
        runs = ", ".join(str(index + 1) for index in indices) or "none"
        parts.append(f"{unit} {rank}: {runs} ({frames} frames)")
    head = f"{len(windows)} window(s) per step over {ranks} {unit}(s)"
    return f"{head}; windows per {unit}: " + "; ".join(parts)


def rank_devices(device: torch.device) -> list[torch.device]:
    """The device of each rank: TRIPTYCH_MUSEPOSE_RANKS ranks, else every visible GPU for plain ``cuda``
    (one for a numbered GPU), else one. CUDA ranks take consecutive GPUs from ``device``'s; CPU ranks all
    run on the CPU."""
    raw = os.environ.get(RANKS_ENV, "").strip()
    count = None
    if raw:
        try:
            count = int(raw)
        except ValueError:
            count = 0
        if count < 1:
            raise ValueError(f"{RANKS_ENV}={raw!r} must be a whole number of processes, 1 or more.")
    if device.type != "cuda":
        return [device] * (count or 1)
    first = device.index or 0
    available = torch.cuda.device_count() - first
    if count is None:
        count = available if device.index is None else 1
    if count > available:
        raise ValueError(
            f"{RANKS_ENV}={count} asks for more GPUs than the {available} visible from cuda:{first}."
        )
    return [torch.device("cuda", first + rank) for rank in range(count)]


# ----------------------------------------------------------------------------------------------------------
# Errors


class Stopped(Exception):
    """The job was stopped on every rank (a cancel, or rank 0's reader went away)."""


class WorkerError(TriptychError, RuntimeError):
    """A worker process failed or died; its team is stopped and the next job starts a new one."""


def _describe(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


# ----------------------------------------------------------------------------------------------------------
# One rank's share of one job


class Share:
    """This rank's part of a job: the windows it runs, and the collectives that keep the ranks in step.

    ``check(error)`` is called while a collective is waited for (``error`` None) and when one failed: on
    rank 0 it raises WorkerError when a worker ended; on a worker it leaves when rank 0 is gone.
    """

    def __init__(
        self,
        rank: int,
        ranks: int,
        device: torch.device,
        stop: Any,
        check: Callable[[BaseException | None], None],
    ):
        self.rank, self.ranks, self.device = rank, ranks, device
        self.stop, self.check = stop, check
        self.calls = 0  # denoising-UNet calls this rank ran in the job

    def stopping(self) -> bool:
        return self.stop.is_set()

    def assigned(self, windows: Sequence[Sequence[int]]) -> _Assigned:
        """This rank's windows (their frame ids): ``len`` counts them, iterating ends early on a stop."""
        return _Assigned(self, [windows[index] for index in split_windows(windows, self.ranks)[self.rank]])

    def combine(self, prediction: torch.Tensor, visits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions and visits summed over all ranks (one all-reduce, the stop flag included)."""
        flag = prediction.new_full((1,), float(self.stopping()))
        buffer = torch.cat([prediction.flatten(), visits.flatten(), flag])
        self._wait(dist.all_reduce(buffer, async_op=True))
        if buffer[-1].item() > 0:
            raise Stopped
        size = prediction.numel()
        return buffer[:size].view_as(prediction), buffer[size:-1].view_as(visits)

    def gather(self, tensor: torch.Tensor) -> list[torch.Tensor] | None:
        """Every rank's ``tensor`` (all of one shape), on rank 0; None on the others."""
        pieces = [torch.empty_like(tensor) for _ in range(self.ranks)] if self.rank == 0 else None
        self._wait(dist.gather(tensor, pieces, dst=0, async_op=True))
        return pieces

    def agree(self) -> None:
        """Raise Stopped on every rank when any rank asks to stop."""
        flag = torch.full((1,), float(self.stopping()), device=self.device)
        self._wait(dist.all_reduce(flag, async_op=True))
        if flag.item() > 0:
            raise Stopped

    def _wait(self, work: dist.Work) -> None:
        while not work.is_completed():
            self.check(None)
            time.sleep(POLL_SECONDS)
        try:
            work.wait()
        except Exception as exc:
            self.check(exc)
            raise


class _Assigned:
    def __init__(self, share: Share, windows: list[Sequence[int]]):
        self.share, self.windows = share, windows

    def __len__(self) -> int:
        return len(self.windows)

    def __iter__(self) -> Iterator[Sequence[int]]:
        for frame_ids in self.windows:
            if self.share.stopping():
                return
            self.share.calls += 1
            yield frame_ids


# ----------------------------------------------------------------------------------------------------------
# Jobs: the same code on every rank


@dataclass
class DenoiseJob:
    """``MusePosePipeline.denoise`` on all ranks; the inputs travel in shared memory."""

    poses: torch.Tensor  # uint8 [N, H, W, 3]
    clip_embeds: torch.Tensor
    reference_latents: torch.Tensor
    generator_state: torch.Tensor
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        poses: np.ndarray,
        encoding: ReferenceEncoding,
        generator: torch.Generator,
        settings: dict[str, Any],
    ) -> DenoiseJob:
        shared = torch.empty(poses.shape, dtype=torch.uint8).share_memory_()
        shared.numpy()[...] = poses
        return cls(
            poses=shared,
            clip_embeds=encoding.clip_embeds.cpu(),
            reference_latents=encoding.latents.cpu(),
            # The initial noise is the generator's first draw: every rank draws it from the same state.
            generator_state=generator.get_state(),
            settings=settings,
        )

    def run(
        self, pipeline: MusePosePipeline, share: Share, on_step: StepCallback | None = None
    ) -> torch.Tensor:
        device, dtype = pipeline.device, pipeline.dtype
        encoding = ReferenceEncoding(
            clip_embeds=self.clip_embeds.to(device, dtype), latents=self.reference_latents.to(device, dtype)
        )
        generator = torch.Generator().set_state(self.generator_state)
        return pipeline.denoise(
            self.poses.numpy(),
            encoding,
            generator=generator,
            share=share,
            on_step=on_step,
            **self.settings,
        )


@dataclass
class DecodeJob:
    """``MusePosePipeline.decode`` shared by frames; rank 0 hands the frames to ``sink`` in order."""

    latents: torch.Tensor
    chunk: int

    def run(
        self,
        pipeline: MusePosePipeline,
        share: Share,
        sink: Callable[[torch.Tensor], None] | None = None,
    ) -> None:
        latents = self.latents.to(pipeline.device, pipeline.dtype)
        frames, height, width = latents.shape[2], *(side * VAE_FACTOR for side in latents.shape[-2:])
        for bounds in decode_rounds(frames, share.ranks, self.chunk):
            start, stop = bounds[share.rank]
            # gather needs one shape on every rank: the round's largest slice, zero-padded.
            size = max(end - begin for begin, end in bounds)
            mine = torch.zeros((size, 3, height, width), device=pipeline.device, dtype=torch.float32)
            if stop > start and not share.stopping():
                mine[: stop - start] = pipeline.decode_frames(latents[:, :, start:stop])
            pieces = share.gather(mine)
            share.agree()
            if sink is not None:
                for (begin, end), piece in zip(bounds, pieces, strict=True):
                    if end > begin:
                        sink(piece[: end - begin])


def build_pipeline(files: dict[str, Path], dtype: torch.dtype, device: torch.device) -> MusePosePipeline:
    """The one-GPU pipeline: models loaded from ``files`` (``load_models``' arguments) onto ``device``.

    Every rank's process builds its pipeline here; on the CPU it first keeps glibc from unmapping the
    convolutions' scratch buffers after every call (``allocator``)."""
    if device.type == "cpu":
        keep_freed_memory()
    return MusePosePipeline(load_models(**files).to(device, dtype), device, dtype)


# ----------------------------------------------------------------------------------------------------------
# Worker processes


def _init_group(backend: str, port: int, rank: int, ranks: int, device: torch.device, store=None) -> None:
    if backend == "gloo":
        # The rendezvous is local: keep gloo's own connections on the loopback interface too.
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    else:
        # Rank 0 watches its workers and aborts the group itself when one dies; NCCL's watchdog must not
        # tear the predictor's process down first (torch.distributed's _abort_process_group asks for 0).
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "0")
    if store is None:
        store = dist.TCPStore("127.0.0.1", port, ranks, is_master=False, timeout=GROUP_TIMEOUT)
    dist.init_process_group(
        backend,
        store=store,
        rank=rank,
        world_size=ranks,
        timeout=GROUP_TIMEOUT,
        device_id=device if device.type == "cuda" else None,
    )


def _leave_if_orphaned(_error: BaseException | None = None) -> None:
    """A worker whose rank 0 is gone has nobody to serve: it ends at once."""
    parent = multiprocessing.parent_process()
    if parent is not None and not parent.is_alive():
        os._exit(1)


def _serve(
    rank: int,
    ranks: int,
    device: torch.device,
    port: int,
    build: Callable[[torch.device], MusePosePipeline],
    jobs: Any,
    replies: Any,
    stop: Any,
) -> None:
    """A worker's life: load the models, join the group, then run jobs until told to leave (None)."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        pipeline = build(device)
        replies.put(("ready", 0))
        _init_group(backend, port, rank, ranks, device)
        while True:
            try:
                job = jobs.get(timeout=1.0)
            except queue.Empty:
                _leave_if_orphaned()
                continue
            if job is None:
                break
            share = Share(rank, ranks, device, stop, _leave_if_orphaned)
            try:
                job.run(pipeline, share)
                replies.put(("done", share.calls))
            except Stopped:
                replies.put(("stopped", share.calls))
            # The job maps the poses' shared memory: let it go now rather than with the next job.
            del job
        dist.destroy_process_group()
    except BaseException as exc:
        # After an error this rank may have left a collective half done: it ends, and rank 0 ends the team.
        replies.put(("failed", _describe(exc)))
        replies.close()
        replies.join_thread()
        raise SystemExit(1) from None


@dataclass
class _Worker:
    rank: int
    device: torch.device
    process: Any
    jobs: Any
    replies: Any


class Team:
    """Rank 0's side of the ranks: starts the worker processes, runs jobs on all ranks, restarts after a
    failure.

    ``build(device)`` loads a rank's pipeline (picklable: the workers call it); ``devices[0]`` is rank 0's.
    ``start`` returns at once, so rank 0 can load its own models meanwhile; ``wait_ready`` joins the group.
    Jobs run one at a time on rank 0's runner thread (``submit``).
    """

    def __init__(
        self,
        build: Callable[[torch.device], MusePosePipeline],
        devices: Sequence[torch.device],
    ):
        self.build, self.devices = build, list(devices)
        self.ranks = len(self.devices)
        self.backend = "nccl" if self.devices[0].type == "cuda" else "gloo"
        self.unit = "GPU" if self.backend == "nccl" else "process"
        self.context = torch.multiprocessing.get_context("forkserver")
        # Preloading makes each worker a fork of a process that already imported torch and the pipeline.
        self.context.set_forkserver_preload([__name__])
        self.stop = self.context.Event()
        self.runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="musepose-rank0")
        self.workers: list[_Worker] = []
        self.store = None
        self.ready = False  # the group is joined: a failure from here on fails a prediction
        # The last job that ended on every rank: UNet calls per rank, and how each worker ended it.
        self.calls: list[int] = []
        self.outcomes: list[str] = []

    # -- lifetime ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker processes (they load their models in the background)."""
        self.store = dist.TCPStore(
            "127.0.0.1", 0, self.ranks, is_master=True, timeout=GROUP_TIMEOUT, wait_for_workers=False
        )
        for rank, device in enumerate(self.devices[1:], start=1):
            jobs, replies = self.context.Queue(), self.context.Queue()
            process = self.context.Process(
                target=_serve,
                args=(rank, self.ranks, device, self.store.port, self.build, jobs, replies, self.stop),
                name=f"musepose-rank{rank}",
                daemon=True,
            )
            process.start()
            self.workers.append(_Worker(rank, device, process, jobs, replies))

    def wait_ready(self) -> None:
        """Wait until every worker loaded its models, then join the group as rank 0."""
        for worker in self.workers:
            self._reply(worker, "ready")
        _init_group(self.backend, self.store.port, 0, self.ranks, self.devices[0], store=self.store)
        self.ready = True
        log.info(
            "MusePose runs on %d %s(s): rank 0 in this process, %d worker process(es) on %s.",
            self.ranks,
            self.unit,
            len(self.workers),
            ", ".join(str(worker.device) for worker in self.workers),
        )

    def close(self) -> None:
        """Between jobs: ask the workers to leave (killing those that do not), then leave the group."""
        if self.ready:
            for worker in self.workers:
                worker.jobs.put(None)
            deadline = time.monotonic() + EXIT_GRACE_SECONDS
            for worker in self.workers:
                worker.process.join(max(0.0, deadline - time.monotonic()))
            dist.destroy_process_group()
        self._end()

    def _end(self) -> None:
        """After a failure: leave the group at once, pending collectives included (an NCCL kernel waiting
        for a dead peer never returns by itself), and kill the workers, which may wait in one too."""
        if dist.is_initialized():
            dist.distributed_c10d._abort_process_group()
        for worker in self.workers:
            if worker.process.exitcode is None:
                worker.process.kill()
            worker.process.join()
        self.workers, self.store, self.ready = [], None, False

    def _failure(self, message: str) -> WorkerError:
        """End the team; the error to raise says so when it happened during a job."""
        during_job = self.ready
        self._end()
        if during_job:
            message += "; this prediction failed, and the workers restart with the next one"
        return WorkerError(message + ".")

    def _fail(self, worker: _Worker, reason: str) -> WorkerError:
        return self._failure(f"The MusePose worker on {worker.device} (rank {worker.rank}) {reason}")

    def check(self, error: BaseException | None = None) -> None:
        """Raise WorkerError (after ending the team) when a worker has ended, or when ``error`` (a failed
        collective) says the connection broke: then a worker that died is waited for a moment to name it."""
        deadline = time.monotonic() + (EXIT_GRACE_SECONDS if error is not None else 0.0)
        while True:
            self._check_workers()
            if time.monotonic() >= deadline:
                break
            time.sleep(WAIT_SECONDS)
        if error is not None:
            raise self._failure(f"The connection between the MusePose processes broke ({_describe(error)})")

    def _check_workers(self) -> None:
        for worker in self.workers:
            code = worker.process.exitcode
            if code is None:
                continue
            message = None
            try:
                while True:
                    kind, value = worker.replies.get(timeout=0.5)
                    if kind == "failed":
                        message = value
            except queue.Empty:
                pass
            if message is not None:
                raise self._fail(worker, f"failed: {message}")
            reason = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            raise self._fail(worker, f"stopped unexpectedly ({reason})")

    def _reply(self, worker: _Worker, expected: str | None = None) -> tuple[str, int]:
        while True:
            try:
                kind, value = worker.replies.get(timeout=WAIT_SECONDS)
            except queue.Empty:
                self._check_workers()
                continue
            if kind == "failed":
                worker.process.join()
                raise self._fail(worker, f"failed: {value}")
            if expected is None or kind == expected:
                return kind, value

    # -- jobs --------------------------------------------------------------------------------------------

    def submit(self, job: DenoiseJob | DecodeJob, local: Callable[[Share], T]) -> Future[T]:
        """Run ``job`` on every rank: ``local(share)`` is rank 0's part, on the runner thread."""
        self.stop.clear()
        return self.runner.submit(self._execute, job, local)

    def _execute(self, job: DenoiseJob | DecodeJob, local: Callable[[Share], T]) -> T:
        if not self.workers:
            log.info("Starting the MusePose workers again.")
            self.start()
            self.wait_ready()
        self.calls, self.outcomes = [], []
        for worker in self.workers:
            worker.jobs.put(job)
        share = Share(0, self.ranks, self.devices[0], self.stop, self.check)
        stopped = None
        try:
            result = local(share)
        except Stopped as exc:
            stopped = exc
        except WorkerError:
            raise
        except BaseException:
            # The workers may wait in a collective that rank 0 will not join: end the team.
            self._end()
            raise
        replies = [self._reply(worker) for worker in self.workers]
        self.calls = [share.calls] + [calls for _, calls in replies]
        self.outcomes = [kind for kind, _ in replies]
        if stopped is not None:
            raise stopped
        return result


# ----------------------------------------------------------------------------------------------------------
# Rank 0's pipeline


class DistributedPipeline:
    """The calls of ``MusePosePipeline`` that ``animate.Animator`` makes, with denoise and decode run by a
    team of ranks; the reference encoding stays on rank 0 (one CLIP and one VAE call)."""

    def __init__(self, local: MusePosePipeline, team: Team):
        self.local, self.team = local, team
        self.unet_calls: list[int] = []  # per rank, in the last denoise (also a stopped one)

    def encode_reference(self, *args, **kwargs) -> ReferenceEncoding:
        return self.local.encode_reference(*args, **kwargs)

    def denoise(
        self,
        poses: np.ndarray,
        encoding: ReferenceEncoding,
        *,
        generator: torch.Generator,
        on_step: StepCallback | None = None,
        **settings,
    ) -> torch.Tensor:
        """``MusePosePipeline.denoise`` (same settings), each step's windows shared out over the ranks;
        ``on_step`` follows rank 0's UNet calls."""
        windows = context_windows(len(poses), settings["window"], settings["overlap"])
        log.info(describe_split(windows, self.team.ranks, self.team.unit))
        job = DenoiseJob.create(poses, encoding, generator, settings)
        try:
            return self._run(job, partial(job.run, self.local, on_step=on_step))
        finally:
            self.unet_calls = self.team.calls
            if self.unet_calls:
                log.info("UNet calls per %s: %s.", self.team.unit, ", ".join(str(n) for n in self.unet_calls))

    def decode(self, latents: torch.Tensor, chunk: int) -> Iterator[torch.Tensor]:
        """``MusePosePipeline.decode``'s frames in order (chunks of at most ``chunk``), from all ranks."""
        frames: queue.Queue[torch.Tensor] = queue.Queue(maxsize=2 * self.team.ranks)
        job = DecodeJob(latents.cpu(), chunk)
        future = self.team.submit(
            job, partial(job.run, self.local, sink=partial(_hand_on, frames, self.team.stop))
        )
        finished = False
        try:
            while True:
                try:
                    yield frames.get(timeout=WAIT_SECONDS)
                except queue.Empty:
                    if future.done() and frames.empty():
                        break
            future.result()
            finished = True
        finally:
            if not finished:
                # The reader is gone (an error or a cancel): stop every rank, then let the job end.
                self.team.stop.set()
                while not future.done():
                    _discard(frames)
                _discard(frames)

    def _run(self, job: DenoiseJob, local: Callable[[Share], T]) -> T:
        """The job's result; a cancel (any BaseException) raised in this thread stops every rank first."""
        future = None
        try:
            future = self.team.submit(job, local)
            while not future.done():
                wait_for([future], timeout=WAIT_SECONDS)
        except BaseException:
            self.team.stop.set()
            if future is not None:
                # Every rank stops at its next UNet call; waiting for that keeps the team in step.
                wait_for([future])
            raise
        return future.result()


def _hand_on(frames: queue.Queue, stop: Any, piece: torch.Tensor) -> None:
    """Queue a decoded piece for the reader, or drop it once the reader asked to stop."""
    while not stop.is_set():
        try:
            frames.put(piece, timeout=WAIT_SECONDS)
            return
        except queue.Full:
            continue


def _discard(frames: queue.Queue) -> None:
    try:
        while True:
            frames.get(timeout=WAIT_SECONDS)
    except queue.Empty:
        pass


def load_pipeline(
    files: dict[str, Path], device: torch.device, dtype: torch.dtype
) -> MusePosePipeline | DistributedPipeline:
    """The pipeline for ``device``: one process, or a team when there are several ranks (``rank_devices``).

    The workers load their models while this process loads its own.
    """
    devices = rank_devices(device)
    build = partial(build_pipeline, files, dtype)
    if len(devices) == 1:
        return build(device)
    team = Team(build, devices)
    team.start()
    try:
        local = build(devices[0])
        team.wait_ready()
    except BaseException:
        team._end()
        raise
    return DistributedPipeline(local, team)
