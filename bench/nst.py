"""Benchmark of the nst core: seconds per evaluation against the VGG floor, bf16 against fp32 (time to the
fp32 run's objective value), evaluations to the reference optimizer's objective value, and peak memory.
Prints tables; asserts nothing.

VGG19 weights: full-size (64/128/256/512 widths) but RANDOM (He-initialised, torchvision's layout). Timings
and memory are the real ones for that architecture; evaluation counts only compare optimisers on the same
objective and say nothing about image quality.

    python -m bench.nst [--sizes 256 512] [--memory-sizes 512] [--budget 40] [--bf16-size 512]

The default run stays under 4 GB of memory; ``--memory-sizes 1024 2048`` (about 4 and 7.3 GB) is for a larger
machine.

GPU rows (1024/2048 timings, 512 px at 500 iterations, autocast) are printed only where CUDA is present.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from PIL import Image

from predictors.nst.fast_start import FastStylizer
from predictors.nst.objective import (
    CONTENT_LAYER,
    STYLE_LAYERS,
    STYLE_WEIGHT,
    Objective,
    autocast,
    cpu_has_bf16,
    style_targets,
)
from predictors.nst.optimize import Optimization, iterate, lbfgs_history, prepare_for_device, to_tensor
from predictors.nst.vgg import VGGFeatures
from tests.nst_jobs import make_job
from tools.tiny_weights.vgg19 import FULL_BLOCK_WIDTHS, magenta_model_dir, tiny_vgg19_state_dict

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE = REPO_ROOT.parent / "shared" / "reference" / "nst" / "vgg19_torchvision.json"


def load(name: str, size: int) -> torch.Tensor:
    image = Image.open(REPO_ROOT / "examples" / name).convert("RGB")
    return to_tensor(image.resize((size, size), Image.LANCZOS))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def clock(device: torch.device) -> float:
    # On the CPU, process time: on a shared machine wall time measures the neighbours as much as the code.
    return time.perf_counter() if device.type == "cuda" else time.process_time()


def paired_medians(first, second, repeats: int, device: torch.device) -> tuple[float, float]:
    """Median seconds of two functions, run alternately so that any drift hits both alike."""
    first()  # warm-up (allocator, oneDNN/cuDNN kernel selection)
    second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for function, bucket in ((first, times[0]), (second, times[1])):
            synchronize(device)
            started = clock(device)
            function()
            synchronize(device)
            bucket.append(clock(device) - started)
    return statistics.median(times[0]), statistics.median(times[1])


class TargetReached(Exception):
    """Ends a pipeline run once the objective value is reached."""


class Bench:
    def __init__(self, device: torch.device):
        self.device = device
        self.state = tiny_vgg19_state_dict(seed=0, block_widths=FULL_BLOCK_WIDTHS)
        self.vgg = VGGFeatures(self.state, (*STYLE_LAYERS, CONTENT_LAYER)).to(device)
        self.floor_vgg = VGGFeatures(self.state, ("relu5_1",)).to(device)
        prepare_for_device(self.vgg)
        prepare_for_device(self.floor_vgg)
        # The default job's precision on a CUDA device; fp32 on the CPU (bf16 has its own table).
        self.dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    def objective(self, size: int, dtype: torch.dtype | None = None) -> tuple[Objective, torch.Tensor]:
        """The default job's objective at ``size`` (the VGG pass in ``dtype``, default ``self.dtype``)."""
        dtype = dtype or self.dtype
        content = load("content.jpg", size).to(self.device)
        style = load("style.png", size).to(self.device)
        grams = style_targets(self.vgg, [style], [1.0], (size, size), 1.0, dtype)
        weights = {"content_weight": 1.0, "style_weight": STYLE_WEIGHT, "tv_weight": 1.0}
        return Objective(self.vgg, content, grams, **weights, dtype=dtype), content

    def timings(self, size: int, repeats: int) -> tuple[float, float, float, int]:
        """Seconds: floor (VGG19 to relu5_1, forward+backward), objective evaluation, optimiser iteration;
        and the L-BFGS history length reached while timing."""
        objective, content = self.objective(size)
        floor_image = content.clone().requires_grad_(True)
        image = content.clone().requires_grad_(True)

        def floor():
            floor_image.grad = None
            with autocast(self.dtype, self.device):
                x = floor_image
                if self.device.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                features = self.floor_vgg(x)["relu5_1"]
            features.float().sum().backward()

        def evaluation():
            image.grad = None
            loss, _ = objective(image)
            loss.backward()

        floor_s, evaluation_s = paired_medians(floor, evaluation, repeats, self.device)
        optimization = Optimization(objective, content, "lbfgs")
        _, iteration_s = paired_medians(floor, optimization.step, repeats, self.device)
        return floor_s, evaluation_s, iteration_s, min(repeats + 1, lbfgs_history(content.numel()))

    def losses_reference(self, objective: Objective, start: torch.Tensor, evaluations: int) -> list[float]:
        """The classic reference's optimiser: L-BFGS, strong-Wolfe line search, history 100, default
        tolerances. Returns the loss of every evaluation."""
        image = start.clone().requires_grad_(True)
        # max_eval caps the evaluations; the default tolerances may stop it earlier (as the reference does).
        optimizer = torch.optim.LBFGS(
            [image],
            max_iter=evaluations,
            max_eval=evaluations,
            history_size=100,
            line_search_fn="strong_wolfe",
        )
        losses: list[float] = []

        def closure():
            optimizer.zero_grad()
            loss, _ = objective(image)
            loss.backward()
            losses.append(float(loss.detach()))
            return loss

        optimizer.step(closure)
        return losses

    def evaluations_to(
        self, objective: Objective, start: torch.Tensor, target: float, budget: int
    ) -> int | None:
        """Evaluations our default optimizer needs to reach ``target`` (None: not within ``budget``)."""
        optimization = Optimization(objective, start, "lbfgs")
        for _ in range(budget):
            if optimization.step()["total"] <= target:
                return optimization.evaluations
        return None

    def fast_start(self, size: int) -> torch.Tensor:
        models = magenta_model_dir()
        fast = FastStylizer(models / "arbitrary_predict.onnx", models / "arbitrary_transform.onnx")
        content = Image.open(REPO_ROOT / "examples" / "content.jpg").convert("RGB").resize((size, size))
        style = Image.open(REPO_ROOT / "examples" / "style.png").convert("RGB")
        return to_tensor(fast.stylize(content, [style], [1.0]))

    def pyramid_evaluations(self, size: int, target: float, iterations: int) -> float | None:
        """The default coarse-to-fine pipeline (``iterate``) until the final scale reaches ``target``.

        Returns evaluations in final-size equivalents (a coarse evaluation counts its pixel share)."""
        content, style = load("content.jpg", size), load("style.png", size)
        cost = 0.0

        def on_step(step):
            nonlocal cost
            width, height = step.size
            cost += width * height / size**2
            if step.scale == step.scales - 1 and step.losses["total"] <= target:
                raise TargetReached

        job = make_job(iterations=iterations, preview_every=0)
        try:
            for _ in iterate(self.vgg, content, [style], job, dtype=self.dtype, on_step=on_step):
                pass
        except TargetReached:
            return cost
        return None

    def convergence(self, size: int, budget: int) -> dict:
        objective, content = self.objective(size)
        reference = self.losses_reference(objective, content, budget)
        target = min(reference)
        reference_evals = reference.index(target) + 1
        ours = self.evaluations_to(objective, content, target, budget * 2)
        fast = self.evaluations_to(objective, self.fast_start(size).to(self.device), target, budget * 2)
        pyramid = self.pyramid_evaluations(size, target, 2 * budget)
        return {
            "pyramid": pyramid,
            "target": target,
            "reference_evals": reference_evals,
            "reference_stopped_after": len(reference),
            "ours": ours,
            "ours_fast": fast,
        }


def timed_run(objective: Objective, start: torch.Tensor, iterations: int) -> tuple[list[float], list]:
    """Default L-BFGS ``iterations`` on ``objective``: CPU seconds elapsed after each, and each iterate."""
    optimization = Optimization(objective, start, "lbfgs")
    elapsed, images, total = [], [], 0.0
    for _ in range(iterations):
        started = time.process_time()
        optimization.step()
        total += time.process_time() - started
        elapsed.append(total)
        images.append(optimization.current().clone())
    return elapsed, images


def first_reaching(value, images: list, target: float) -> int | None:
    """Index of the first image whose ``value`` is at or below ``target``, by bisection: the objective
    falls along the optimizer's path, so log2(n) untimed evaluations find it."""
    if not images or value(images[-1]) > target:
        return None
    low, high = 0, len(images) - 1
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if value(images[middle]) <= target else (middle + 1, high)
    return low


def bf16_time_to_objective(bench: Bench, size: int, iterations: int, repeats: int) -> dict:
    """fp32 runs ``iterations`` L-BFGS iterations; bf16 (VGG pass in bf16 autocast, Gram and losses fp32)
    runs until the fp32 run's final objective value, judged by the fp32 objective. Runs alternate."""
    fp32, content = bench.objective(size, torch.float32)
    bf16, _ = bench.objective(size, torch.bfloat16)

    def value(image: torch.Tensor) -> float:
        with torch.no_grad():
            return float(fp32(image)[0])

    fp32_times, bf16_times, finals = [], [], []
    for _ in range(repeats):
        elapsed, images = timed_run(fp32, content, iterations)
        target = value(images[-1])
        fp32_times.append(elapsed[-1])
        elapsed_bf16, images_bf16 = timed_run(bf16, content, 2 * iterations)
        reached = first_reaching(value, images_bf16, target)
        bf16_times.append(elapsed_bf16[reached] if reached is not None else math.inf)
        finals.append(value(images_bf16[iterations - 1]) / target)
    return {
        "target": target,
        "fp32": statistics.median(fp32_times),
        "bf16": statistics.median(bf16_times),
        "final_ratio": statistics.median(finals),
        "n": repeats,
    }


def bf16_rows(bench: Bench, args: argparse.Namespace) -> None:
    print("\n## bf16 on the CPU: VGG pass in bf16 autocast, Gram matrices and losses in fp32")
    native = cpu_has_bf16()
    print(f"native bf16 (oneDNN AVX512-BF16/AMX) on this CPU: {'yes' if native else 'no'}")
    size = args.bf16_eval_size
    fp32, content = bench.objective(size, torch.float32)
    bf16, _ = bench.objective(size, torch.bfloat16)
    images = [content.clone().requires_grad_(True) for _ in range(2)]

    def evaluate(objective: Objective, image: torch.Tensor):
        def once():
            image.grad = None
            objective(image)[0].backward()

        return once

    fp32_s, bf16_s = paired_medians(
        evaluate(fp32, images[0]), evaluate(bf16, images[1]), args.repeats, bench.device
    )
    print("| size | fp32 s/eval | bf16 s/eval | speed-up (fp32/bf16) | n |")
    print("|---|---|---|---|---|")
    print(f"| {size} | {fp32_s:.3f} | {bf16_s:.3f} | {fp32_s / bf16_s:.3f} | {args.repeats} |")
    if not (native or args.force_bf16):
        print(
            f"time to objective at {args.bf16_size} px not run: without native bf16 kernels every bf16 "
            "evaluation is the slower one above (precision auto chooses fp32 on this CPU)."
        )
        return
    row = bf16_time_to_objective(bench, args.bf16_size, args.bf16_iterations, args.bf16_repeats)
    print(f"\ntime to the fp32 run's objective after {args.bf16_iterations} iterations, CPU process time,")
    print(
        "fp32 and bf16 runs alternating, medians; final = bf16's objective after the same iterations / fp32's"
    )
    print("| size | target | fp32 s | bf16 s | speed-up | final ratio | n |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {args.bf16_size} | {row['target']:.4g} | {row['fp32']:.1f} | {row['bf16']:.1f} | "
        f"{row['fp32'] / row['bf16']:.2f} | {row['final_ratio']:.4f} | {row['n']} |"
    )


def peak_rss_child(size: int, iterations: int) -> None:
    """In a subprocess: a few default optimiser iterations at ``size``; prints peak RSS and history bytes."""
    bench = Bench(torch.device("cpu"))
    objective, content = bench.objective(size)
    optimization = Optimization(objective, content, "lbfgs")
    for _ in range(iterations):
        optimization.step()
    history = lbfgs_history(content.numel())
    # History entries not yet filled after ``iterations`` steps: two fp32 image-sized vectors each.
    missing = max(0, history - (iterations - 1)) * 2 * 4 * content.numel()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"peak_rss": peak, "history": history, "missing_history_bytes": missing}))


def measure_peak(size: int, iterations: int) -> dict:
    command = [sys.executable, "-m", "bench.nst", "--peak-child", str(size), "--iterations", str(iterations)]
    command += ["--threads", str(torch.get_num_threads())]
    output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO_ROOT).stdout
    return json.loads(output.strip().splitlines()[-1])


def gpu_rows(bench: Bench, sizes: list[int]) -> None:
    print("\n## GPU (autocast for the VGG pass, Gram and losses in fp32, channels_last, cuDNN benchmark)")
    print(f"device: {torch.cuda.get_device_name()}")
    print("| size | floor s/eval | ours s/eval | ratio | ours s/iteration | max allocated GB |")
    print("|---|---|---|---|---|---|")
    for size in sizes:
        torch.cuda.reset_peak_memory_stats()
        floor, evaluation, iteration, _ = bench.timings(size, 5)
        peak = torch.cuda.max_memory_allocated() / 1e9
        ratio = evaluation / floor
        print(f"| {size} | {floor:.4f} | {evaluation:.4f} | {ratio:.3f} | {iteration:.4f} | {peak:.2f} |")
    objective, content = bench.objective(512)
    optimization = Optimization(objective, content, "lbfgs")
    synchronize(bench.device)
    started = time.perf_counter()
    for _ in range(500):
        optimization.step()
    synchronize(bench.device)
    print(f"\n512 px, 500 iterations: {time.perf_counter() - started:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description="nst benchmark")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--memory-sizes", type=int, nargs="*", default=[512])
    parser.add_argument(
        "--budget", type=int, nargs="+", default=[40, 20], help="reference evaluations per size"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=2, help="optimiser iterations per memory run")
    parser.add_argument("--skip-timings", action="store_true", help="only convergence and memory")
    parser.add_argument("--convergence-sizes", type=int, nargs="*", help="default: --sizes")
    parser.add_argument("--bf16-eval-size", type=int, default=64, help="size of the bf16 s/eval row")
    parser.add_argument("--bf16-size", type=int, default=512, help="size of the bf16 time-to-objective row")
    parser.add_argument("--bf16-iterations", type=int, default=30, help="fp32 iterations that set the target")
    parser.add_argument("--bf16-repeats", type=int, default=1)
    parser.add_argument("--force-bf16", action="store_true", help="time to objective without native bf16")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the project runs one)")
    parser.add_argument("--peak-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    # On a shared machine two threads that wait on each other time the neighbours, not the code.
    torch.set_num_threads(args.threads)
    if args.peak_child:
        peak_rss_child(args.peak_child, args.iterations)
        return

    cpu = torch.device("cpu")
    bench = Bench(cpu)
    print("# nst benchmark")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s)")
    print("VGG19: full-size architecture with RANDOM weights (real weights unavailable); evaluation counts")
    print("compare optimisers on one objective and say nothing about image quality.")
    if REFERENCE.is_file():
        facts = json.loads(REFERENCE.read_text())["reference_implementation_facts"]["measured_cpu_2core"]
        print(f"Reference facts (other run, same kind of machine): {facts}")

    print("\n## Seconds per objective evaluation against the floor (VGG19 to relu5_1, forward+backward)")
    print(f"CPU process time (not wall time), median of {args.repeats}, floor and ours alternating")
    print("| size | floor s | ours s/eval | ratio | ours s/iteration (L-BFGS, history) | n |")
    print("|---|---|---|---|---|---|")
    for size in [] if args.skip_timings else args.sizes:
        floor, evaluation, iteration, history = bench.timings(size, args.repeats)
        print(
            f"| {size} | {floor:.3f} | {evaluation:.3f} | {evaluation / floor:.3f} | {iteration:.3f} "
            f"(history {history}) | {args.repeats} |"
        )

    print("\n## Evaluations to reach the reference optimiser's best objective value (same objective, images)")
    print(
        "reference: L-BFGS strong-Wolfe, history 100, default tolerances. ours: L-BFGS without line search,"
    )
    print(
        f"early stop disabled, history {lbfgs_history(3 * 512 * 512)} at 512 px; content init and fast init."
    )
    print("pipeline: the default coarse-to-fine run, in final-size evaluation equivalents (ratio).")
    print(
        "| size | target | reference evals (ran) | ours, content init | ratio | ours, fast init | pipeline |"
    )
    print("|---|---|---|---|---|---|---|")
    sizes = args.sizes if args.convergence_sizes is None else args.convergence_sizes
    budgets = args.budget + [args.budget[-1]] * (len(sizes) - len(args.budget))
    for size, budget in zip(sizes, budgets, strict=False):
        row = bench.convergence(size, budget)
        reference, ours, fast, pyramid = row["reference_evals"], row["ours"], row["ours_fast"], row["pyramid"]
        missing = f"> {2 * budget}"
        ratio = f"{ours / reference:.2f}" if ours else "n/a"
        pipeline = f"{pyramid:.1f} ({pyramid / reference:.2f})" if pyramid else "not reached"
        print(
            f"| {size} | {row['target']:.4g} | {reference} ({row['reference_stopped_after']}) | "
            f"{ours or missing} | {ratio} | {fast or missing} | {pipeline} |"
        )

    bf16_rows(bench, args)

    if args.memory_sizes:
        print("\n## Peak memory, CPU peak RSS of a separate process (model, activations, optimiser state)")
        print(f"measured over {args.iterations} iterations; the L-BFGS history not yet filled is added")
        print("| size | history | measured peak GB | + unfilled history GB | total GB |")
        print("|---|---|---|---|---|")
        for size in args.memory_sizes:
            row = measure_peak(size, args.iterations)
            peak, missing = row["peak_rss"] / 1e9, row["missing_history_bytes"] / 1e9
            print(f"| {size} | {row['history']} | {peak:.2f} | {missing:.2f} | {peak + missing:.2f} |")

    if torch.cuda.is_available():
        gpu_rows(Bench(torch.device("cuda")), [512, 1024, 2048])
    else:
        print("\n(no CUDA device: GPU rows skipped)")


if __name__ == "__main__":
    main()
