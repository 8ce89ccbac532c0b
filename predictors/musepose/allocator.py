"""glibc's allocator kept from returning large freed blocks to the system while MusePose runs on the CPU.

Why: for every call of a CPU convolution oneDNN reorders the weight into a scratch buffer the size of the
weight and frees it after the call. The UNets' widest convolutions hold 59 MB (1280 -> 1280, 3x3) and
118 MB (2560 -> 1280) of float32 weights, above the 32 MB up to which glibc raises its mmap threshold by
itself, so by default each call maps fresh pages and unmaps them again: about 16 000 page faults per call
of a 1280-wide conv, 460 000 and 1.7 s of system time per denoising step at 128x128 with 4 frames
(``bench/musepose.py`` counts them). A threshold above the largest weight serves the buffers from the heap,
and a trim threshold as high keeps the freed block there for the next call, so its pages stay mapped.

Threads: Cog predicts on a worker thread that it starts before ``setup()``. A thread with an arena of its own
(glibc's default) gets heaps of 64 MB, so it maps a larger block afresh on every call whatever the threshold;
``cog.musepose.yaml`` therefore starts the process with ``MALLOC_ARENA_MAX=ARENAS``, which puts every thread
on the main arena, the one these settings keep. (mallopt cannot move a thread that already has an arena.)

The cost: up to TRIM_THRESHOLD bytes of freed memory stay resident at the heap's top, and blocks under
MMAP_THRESHOLD that are freed in the middle of the heap are reused rather than returned. Larger blocks (the
activations of a long window) are still mapped and unmapped as before.
"""

from __future__ import annotations

import ctypes
import logging
import platform

# mallopt's parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Above the largest conv weight of the networks (118 MB); the same for the trim threshold, so that a freed
# buffer of that size at the heap's top stays mapped.
MMAP_THRESHOLD = 256 << 20
TRIM_THRESHOLD = 256 << 20
# The arenas the image starts with (cog.musepose.yaml: MALLOC_ARENA_MAX).
ARENAS = 1

log = logging.getLogger(__name__)


def keep_freed_memory() -> bool:
    """Apply MMAP_THRESHOLD and TRIM_THRESHOLD to this process's glibc allocator; False where the C library
    is not glibc (nothing changes there) or refuses a value."""
    if platform.libc_ver()[0] != "glibc":
        log.info("Not glibc: the allocator settings for CPU convolutions are not applied.")
        return False
    libc = ctypes.CDLL(None)
    applied = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    applied = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and applied
    if not applied:
        log.warning("glibc refused the allocator settings; CPU convolutions pay page faults on every call.")
    return applied
