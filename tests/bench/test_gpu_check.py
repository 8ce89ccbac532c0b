"""bench/gpu_check.py: its CPU dry run prints every row with a number, its arithmetic holds, its budget
guard and failure rows work, and its SD configs are the published ones."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import gpu_check

REPO_ROOT = Path(__file__).resolve().parents[2]

DRY_ROWS = [
    "nst s/iteration 32² fp32",
    "nst s/iteration 32² bf16",
    "nst s/iteration 64² fp32",
    "nst s/iteration 64² bf16",
    "sd_style SD1.5 64² s/step, guidance (2 rows)",
    "sd_style SD1.5 64² s/step, turbo (1 row)",
    "sd_style SD1.5 64² s/image default (20 steps)",
    "sd_style SD1.5 64² s/image turbo (4 steps)",
    "sd_style SDXL 64² s/step, guidance (2 rows)",
    "sd_style SDXL 64² s/step, turbo (1 row)",
    "sd_style SDXL 64² s/image default (20 steps)",
    "sd_style SDXL 64² s/image turbo (4 steps)",
    "musepose s/frame/step 32², 4 frames",
    "musepose s/frame/step 64², 4 frames",
    "DWPose s/frame, one call per frame",
    "DWPose s/frame, batches of 16",
]


def parse_table(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 4 and cells[0] != "check":
            rows[cells[0]] = cells[1:]
    return rows


@pytest.fixture(scope="module")
def dry_run() -> tuple[str, dict[str, list[str]]]:
    result = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", "--dry"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout, parse_table(result.stdout)


def test_the_dry_run_prints_every_row_with_a_number(dry_run):
    stdout, rows = dry_run
    assert stdout.startswith("# GPU check (dry run): ")
    assert list(rows) == [
        "card",
        "driver, CUDA",
        "torch",
        *DRY_ROWS[:14],
        "musepose upstream speed",
        "ONNX Runtime providers",
        *DRY_ROWS[14:],
    ]
    for name in DRY_ROWS:
        value, peak, _ = rows[name]
        assert float(value) > 0, (name, value)
        if name.startswith(("nst", "musepose")) or "s/step" in name:
            assert re.fullmatch(r"\d+\.\d\d GiB RSS", peak), (name, peak)
    assert rows["card"][0] == "none: CPU dry run (tiny sizes)"
    assert rows["ONNX Runtime providers"][0] == "CPUExecutionProvider"
    assert rows["musepose upstream speed"][0] == "none published"
    assert "AttnProcessor2_0" in rows["sd_style SDXL 64² s/step, guidance (2 rows)"][2]


def test_the_dry_run_per_image_rows_are_steps_times_seconds_per_step(dry_run):
    _, rows = dry_run
    for family in ("SD1.5", "SDXL"):
        label = f"sd_style {family} 64²"
        cfg = float(rows[f"{label} s/step, guidance (2 rows)"][0])
        single = float(rows[f"{label} s/step, turbo (1 row)"][0])
        default = float(rows[f"{label} s/image default (20 steps)"][0])
        turbo_value, _, ratio = rows[f"{label} s/image turbo (4 steps)"]
        assert default == pytest.approx(20 * cfg, abs=2e-3)
        assert float(turbo_value) == pytest.approx(4 * single, abs=2e-3)
        assert float(ratio.removesuffix("x")) == pytest.approx(default / float(turbo_value), abs=0.1)
    per_frame = float(rows["DWPose s/frame, one call per frame"][0])
    batched_value, _, speedup = rows["DWPose s/frame, batches of 16"]
    assert float(speedup.removesuffix("x")) == pytest.approx(per_frame / float(batched_value), rel=0.02)


def _check(**changes) -> gpu_check.Check:
    return gpu_check.Check(torch.device("cpu"), gpu_check.Plan(**{**vars(gpu_check.dry_plan()), **changes}))


def test_a_spent_budget_skips_the_sections_left():
    check = _check(budget_s=-1.0)
    check.section("nst", gpu_check.nst_rows)
    check.section("musepose", gpu_check.musepose_rows)
    assert [(row.name, row.value) for row in check.rows] == [
        ("nst", "skipped: time budget spent"),
        ("musepose", "skipped: time budget spent"),
    ]


def test_a_failing_section_becomes_a_row_and_the_next_one_runs():
    check = _check(budget_s=60.0)

    def broken(_check):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    check.section("sd_style", broken)
    check.section("card", gpu_check.machine_rows)
    assert check.rows[0].name == "sd_style"
    assert check.rows[0].value == "failed: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert [row.name for row in check.rows[1:]] == ["card", "driver, CUDA", "torch"]


def test_seconds_is_the_median_after_one_warm_up(monkeypatch):
    check = _check(repeats=3)
    clock = iter([0.0, 0.3, 1.0, 1.1, 2.0, 2.2])
    monkeypatch.setattr(gpu_check.time, "perf_counter", lambda: next(clock))
    calls = []
    assert check.seconds(lambda: calls.append(1), wall=True) == pytest.approx(0.2)
    assert len(calls) == 4


def test_seconds_stops_repeating_once_the_budget_is_spent(monkeypatch):
    check = _check(repeats=3)
    check.started -= check.plan.budget_s + 1
    clock = iter([0.0, 0.4])
    monkeypatch.setattr(gpu_check.time, "perf_counter", lambda: next(clock))
    assert check.seconds(lambda: None, wall=True) == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("ours", "reference"),
    [
        ("sd15_unet.json", "sd15_runwayml/unet/config.json"),
        ("sdxl_unet.json", "sdxl_base_1.0/unet/config.json"),
    ],
)
def test_the_sd_configs_are_the_published_ones(reference_dir, ours, reference):
    published = json.loads((reference_dir / "sd" / reference).read_text())
    assert json.loads((gpu_check.CONFIGS / ours).read_text()) == published
