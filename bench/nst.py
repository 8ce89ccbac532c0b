"""Benchmark of the nst core: seconds per evaluation against the VGG floor, evaluations to an objective
value, and peak memory. Prints a table; asserts nothing.

VGG19 weights: full-size (64/128/256/512 widths) but RANDOM (He-initialised, torchvision's layout). Timings
and memory are the real ones for that architecture; evaluation counts only compare optimisers on the same
objective and say nothing about image quality.

    python -m bench.nst [--sizes 256 512] [--memory-sizes 1024 2048] [--budget 40]

GPU rows (1024/2048 timings, 512 px at 500 iterations, autocast) are printed only where CUDA is present.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image

from predictors.nst.fast_start import FastStylizer
from predictors.nst.stylize import (
    CONTENT_LAYER,
    STYLE_LAYERS,
    Objective,
    Optimisation,
    Settings,
    lbfgs_history,
    prepare_for_device,
    style_targets,
    stylize,
    to_tensor,
    vgg_autocast,
)
from predictors.nst.vgg import VGGFeatures
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
        self.settings = Settings()

    def objective(self, size: int) -> tuple[Objective, torch.Tensor]:
        content = load("content.jpg", size).to(self.device)
        style = load("style.png", size).to(self.device)
        grams = style_targets(self.vgg, [style], [1.0], (size, size), 1.0)
        return Objective(self.vgg, content, grams, self.settings), content

    def timings(self, size: int, repeats: int) -> tuple[float, float, float, int]:
        """Seconds: floor (VGG19 to relu5_1, forward+backward), objective evaluation, optimiser iteration;
        and the L-BFGS history length reached while timing."""
        objective, content = self.objective(size)
        floor_image = content.clone().requires_grad_(True)
        image = content.clone().requires_grad_(True)

        def floor():
            floor_image.grad = None
            with vgg_autocast(self.device):
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
        optimisation = Optimisation(objective, content, self.settings)
        _, iteration_s = paired_medians(floor, optimisation.step, repeats, self.device)
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
        """Evaluations our default optimiser needs to reach ``target`` (None: not within ``budget``)."""
        optimisation = Optimisation(objective, start, self.settings)
        for _ in range(budget):
            if optimisation.step()["total"] <= target:
                return optimisation.evaluations
        return None

    def fast_start(self, size: int) -> torch.Tensor:
        models = magenta_model_dir()
        fast = FastStylizer(models / "arbitrary_predict.onnx", models / "arbitrary_transform.onnx")
        content = Image.open(REPO_ROOT / "examples" / "content.jpg").convert("RGB").resize((size, size))
        style = Image.open(REPO_ROOT / "examples" / "style.png").convert("RGB")
        return to_tensor(fast.stylize(content, [style]))

    def pyramid_evaluations(self, size: int, target: float, iterations: int) -> float | None:
        """The default coarse-to-fine pipeline (``stylize``) until the final scale reaches ``target``.

        Returns evaluations in final-size equivalents (a coarse evaluation counts its pixel share)."""
        content, style = load("content.jpg", size), load("style.png", size)
        cost = 0.0

        def on_step(step):
            nonlocal cost
            width, height = step.size
            cost += width * height / size**2
            if step.scale == step.scales - 1 and step.losses["total"] <= target:
                raise TargetReached

        try:
            stylize(
                self.vgg, content, [style], replace(self.settings, iterations=iterations), on_step=on_step
            )
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


def peak_rss_child(size: int, iterations: int) -> None:
    """In a subprocess: a few default optimiser iterations at ``size``; prints peak RSS and history bytes."""
    bench = Bench(torch.device("cpu"))
    objective, content = bench.objective(size)
    optimisation = Optimisation(objective, content, bench.settings)
    for _ in range(iterations):
        optimisation.step()
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
    optimisation = Optimisation(objective, content, bench.settings)
    synchronize(bench.device)
    started = time.perf_counter()
    for _ in range(500):
        optimisation.step()
    synchronize(bench.device)
    print(f"\n512 px, 500 iterations: {time.perf_counter() - started:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description="nst benchmark")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--memory-sizes", type=int, nargs="*", default=[1024, 2048])
    parser.add_argument(
        "--budget", type=int, nargs="+", default=[40, 20], help="reference evaluations per size"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=2, help="optimiser iterations per memory run")
    parser.add_argument("--skip-timings", action="store_true", help="only convergence and memory")
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
    print("| size | floor s | ours s/eval | ratio | ours s/iteration (L-BFGS, history) |")
    print("|---|---|---|---|---|")
    for size in [] if args.skip_timings else args.sizes:
        floor, evaluation, iteration, history = bench.timings(size, args.repeats)
        print(
            f"| {size} | {floor:.3f} | {evaluation:.3f} | {evaluation / floor:.3f} | {iteration:.3f} "
            f"(history {history}) |"
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
    budgets = args.budget + [args.budget[-1]] * (len(args.sizes) - len(args.budget))
    for size, budget in zip(args.sizes, budgets, strict=False):
        row = bench.convergence(size, budget)
        reference, ours, fast, pyramid = row["reference_evals"], row["ours"], row["ours_fast"], row["pyramid"]
        missing = f"> {2 * budget}"
        ratio = f"{ours / reference:.2f}" if ours else "n/a"
        pipeline = f"{pyramid:.1f} ({pyramid / reference:.2f})" if pyramid else "not reached"
        print(
            f"| {size} | {row['target']:.4g} | {reference} ({row['reference_stopped_after']}) | "
            f"{ours or missing} | {ratio} | {fast or missing} | {pipeline} |"
        )

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
