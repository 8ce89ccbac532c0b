"""The glibc settings that spare MusePose's CPU convolutions a page fault per weight page on every call."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import torch

from predictors.musepose import allocator
from tests.conftest import REPO_ROOT

# Above the 32 MB up to which glibc raises its mmap threshold by itself, like a 1280-wide conv's weight.
BLOCK_BYTES = 128 << 20
PAGES = BLOCK_BYTES // 4096


def block_faults() -> int:
    """Minor page faults of this thread while a BLOCK_BYTES tensor is allocated, written and freed."""
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    torch.ones(BLOCK_BYTES // 4)
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before


def test_the_thresholds_cover_the_largest_conv_weight():
    assert allocator.MMAP_THRESHOLD == allocator.TRIM_THRESHOLD == 256 << 20
    # up_blocks.0.resnets.0.conv1 of the UNets: 2560 -> 1280 channels, 3x3, float32.
    assert allocator.MMAP_THRESHOLD > 2560 * 1280 * 3 * 3 * 4


SCRIPT = """
import json
from predictors.musepose.allocator import keep_freed_memory
from tests.unit.test_musepose_allocator import block_faults
plain = [block_faults() for _ in range(3)]
applied = keep_freed_memory()
kept = [block_faults() for _ in range(3)]
print(json.dumps({"plain": plain, "applied": applied, "kept": kept}))
"""


def test_a_freed_large_block_stays_mapped_once_applied():
    """In a fresh process: by default every 128 MB block faults in each of its pages again; with the settings
    only the first one does, and the next reuse the same pages."""
    output = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, check=True, capture_output=True, text=True
    ).stdout
    result = json.loads(output)
    assert result["applied"] is True
    assert all(faults >= PAGES for faults in result["plain"])
    assert all(faults < PAGES // 100 for faults in result["kept"][1:])
