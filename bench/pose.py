"""Benchmark of the pose pipeline: DWPose pre/post-processing per frame apart from network time, batched
against one-crop-per-call pose inference, and video decode/encode throughput with peak memory at two clip
lengths. Prints a table; asserts nothing.

The networks are the project's ONNX stand-ins (real input/output shapes). For the overhead rows their cost
is nil and is measured and subtracted anyway; for the batching rows the pose stand-in carries a
convolution stack of about 10 GFLOPs per crop.

    python -m bench.pose [--frames 20] [--crops 8] [--seconds 4 8] [--threads 0]
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from predictors.common.dwpose import Wholebody
from predictors.common.dwpose.estimator import PoseEstimator
from predictors.common.onnx import create_session
from predictors.common.video import VideoWriter, read_frames
from tools.tiny_weights import dwpose as standins

SIZES = {"1080p landscape": (1920, 1080), "720p vertical": (720, 1280)}


class TimedSession:
    """Wraps an ONNX Runtime session and adds up the seconds spent inside ``run``."""

    def __init__(self, session):
        self.session = session
        self.seconds = 0.0

    def get_inputs(self):
        return self.session.get_inputs()

    def run(self, names, feeds):
        start = time.perf_counter()
        out = self.session.run(names, feeds)
        self.seconds += time.perf_counter() - start
        return out


def overhead_rows(folder: Path, frames: int) -> list[tuple[str, str]]:
    rows = []
    rng = np.random.default_rng(0)
    for label, (width, height) in SIZES.items():
        image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        for rules in ("controlnet", "musepose"):
            model = Wholebody(folder / "yolox_l.onnx", folder / "dw-ll_ucoco_384.onnx", rules=rules)
            model.detector = TimedSession(model.detector)
            model.estimator.session = TimedSession(model.estimator.session)
            model(image)
            totals, networks = [], []
            for _ in range(frames):
                model.detector.seconds = model.estimator.session.seconds = 0.0
                start = time.perf_counter()
                model(image)
                totals.append(time.perf_counter() - start)
                networks.append(model.detector.seconds + model.estimator.session.seconds)
            overheads = [1000 * (total - network) for total, network in zip(totals, networks, strict=True)]
            rows.append(
                (
                    f"pre/post per frame, {label}, {rules} rules",
                    f"median {statistics.median(overheads):.2f} ms, best {min(overheads):.2f} ms "
                    f"(network {1000 * statistics.median(networks):.2f} ms; goal <= 5 ms)",
                )
            )
    return rows


def batching_rows(folder: Path, crops: int, threads: int) -> list[tuple[str, str]]:
    path = folder / "pose_10gflops.onnx"
    standins.write_pose_model(path, dynamic_batch=True, extra_gflops=10.0)
    estimator = PoseEstimator(create_session(path, ["CPUExecutionProvider"], threads=threads or None))
    tensors = np.random.default_rng(0).normal(size=(crops, 3, 384, 288)).astype(np.float32)
    estimator.run(tensors[:1])

    def one_per_call():
        for i in range(crops):
            estimator.run(tensors[i : i + 1])

    def batched():
        estimator.run(tensors)

    single_times, batch_times = [], []
    for _ in range(3):
        for timings, function in ((single_times, one_per_call), (batch_times, batched)):
            start = time.perf_counter()
            function()
            timings.append(time.perf_counter() - start)
    single, batch = statistics.median(single_times), statistics.median(batch_times)
    return [
        (f"pose net, {crops} crops one per call (~10 GFLOPs each)", f"{1000 * single / crops:.0f} ms/crop"),
        (f"pose net, {crops} crops in one batch", f"{1000 * batch / crops:.0f} ms/crop"),
        ("batched speed-up", f"{single / batch:.2f}x (goal >= 2x)"),
    ]


def _frame(index: int, width: int, height: int) -> np.ndarray:
    x = np.arange(width, dtype=np.uint16)[None, :]
    y = np.arange(height, dtype=np.uint16)[:, None]
    red = ((x + 4 * index) % 256).astype(np.uint8)
    green = ((y + 2 * index) % 256).astype(np.uint8)
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = np.broadcast_to(red, (height, width))
    image[..., 1] = np.broadcast_to(green, (height, width))
    image[..., 2] = 128
    return image


def _encode_job(path: str, seconds: float, fps: int, queue) -> None:
    count = int(seconds * fps)
    start = time.perf_counter()
    with VideoWriter(path, Fraction(fps), crf=18) as writer:
        for i in range(count):
            writer.write(_frame(i, 1920, 1080))
    elapsed = time.perf_counter() - start
    queue.put((count / elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def _decode_job(path: str, queue) -> None:
    start = time.perf_counter()
    count = sum(1 for _ in read_frames(path))
    elapsed = time.perf_counter() - start
    queue.put((count / elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def _in_child(target, *args) -> tuple[float, float]:
    """Run a job in a fresh process, so that its peak RSS is its own."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def video_rows(folder: Path, lengths: list[float], fps: int = 30) -> list[tuple[str, str]]:
    rows = []
    for seconds in lengths:
        path = str(folder / f"clip_{seconds:g}s.mp4")
        encode_fps, encode_mb = _in_child(_encode_job, path, seconds, fps)
        decode_fps, decode_mb = _in_child(_decode_job, path)
        rows.append(
            (f"encode 1080p, {seconds:g} s clip", f"{encode_fps:.1f} frames/s, peak RSS {encode_mb:.0f} MB")
        )
        rows.append(
            (f"decode 1080p, {seconds:g} s clip", f"{decode_fps:.1f} frames/s, peak RSS {decode_mb:.0f} MB")
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20, help="frames per overhead measurement")
    parser.add_argument("--crops", type=int, default=8, help="crops in the batching comparison")
    parser.add_argument("--seconds", type=float, nargs="+", default=[4.0, 8.0], help="1080p clip lengths")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: its default)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        standins.write_detector(folder / "yolox_l.onnx")
        standins.write_pose_model(folder / "dw-ll_ucoco_384.onnx")
        rows = overhead_rows(folder, args.frames)
        rows += batching_rows(folder, args.crops, args.threads)
        rows += video_rows(folder, args.seconds)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
