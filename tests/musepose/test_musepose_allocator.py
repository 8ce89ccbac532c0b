"""The glibc settings that spare MusePose's CPU convolutions a page fault per weight page on every call."""

from __future__ import annotations

import ctypes
import json
import os
import resource
import subprocess
import sys
import threading

import yaml

from predictors.musepose import allocator
from tests.conftest import REPO_ROOT

# Above the 32 MB up to which glibc raises its mmap threshold by itself, and above a thread arena's 64 MB
# heaps, like the 118 MB reordered weight of a 2560 -> 1280 conv.
BLOCK_BYTES = 128 << 20
PAGES = BLOCK_BYTES // 4096

_libc = ctypes.CDLL(None)
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = [ctypes.c_size_t]
_libc.free.argtypes = [ctypes.c_void_p]
_libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]


def block_faults() -> int:
    """Minor page faults of this thread while glibc allocates a BLOCK_BYTES block, it is written and freed
    (what oneDNN does with a conv's scratch buffer)."""
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    block = _libc.malloc(BLOCK_BYTES)
    _libc.memset(block, 1, BLOCK_BYTES)
    _libc.free(block)
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before


def faults_on_a_new_thread(calls: int) -> list[int]:
    """``block_faults`` ``calls`` times on a fresh thread, as Cog runs a prediction on a worker thread."""
    counts: list[int] = []
    thread = threading.Thread(target=lambda: counts.extend(block_faults() for _ in range(calls)))
    thread.start()
    thread.join()
    return counts


def container_environment() -> dict[str, str]:
    """The MALLOC_* variables cog.musepose.yaml sets."""
    config = yaml.safe_load((REPO_ROOT / "cog.musepose.yaml").read_text())
    pairs = (entry.split("=", 1) for entry in config["environment"])
    return {name: value for name, value in pairs if name.startswith("MALLOC_")}


def test_the_image_starts_with_one_arena():
    """Threads Cog starts before setup() already hold an arena; only the environment reaches them."""
    assert container_environment() == {"MALLOC_ARENA_MAX": str(allocator.ARENAS)}


def test_the_thresholds_cover_the_largest_conv_weight():
    assert allocator.MMAP_THRESHOLD == allocator.TRIM_THRESHOLD == 256 << 20
    assert allocator.ARENAS == 1
    # up_blocks.0.resnets.0.conv1 of the UNets: 2560 -> 1280 channels, 3x3, float32.
    assert allocator.MMAP_THRESHOLD > 2560 * 1280 * 3 * 3 * 4


SCRIPT = """
import json
from predictors.musepose.allocator import keep_freed_memory
from tests.musepose.test_musepose_allocator import block_faults, faults_on_a_new_thread
plain = {"main": [block_faults() for _ in range(3)], "thread": faults_on_a_new_thread(3)}
applied = keep_freed_memory()
kept = {"main": [block_faults() for _ in range(3)], "thread": faults_on_a_new_thread(3)}
print(json.dumps({"plain": plain, "applied": applied, "kept": kept}))
"""


def test_a_freed_large_block_stays_mapped_once_applied():
    """In a fresh process started as the image starts it (cog.musepose.yaml's MALLOC_ARENA_MAX): by default
    every 128 MB block faults in each of its pages again, on the main thread and on another; with the
    settings only the first one does (at most), and the next reuse them."""
    environment = {**os.environ, **container_environment()}
    output = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO_ROOT,
        env=environment,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result = json.loads(output)
    assert result["applied"] is True
    for where in ("main", "thread"):
        assert all(faults >= PAGES for faults in result["plain"][where]), where
        assert all(faults < PAGES // 100 for faults in result["kept"][where][1:]), where
