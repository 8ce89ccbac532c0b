"""Reference hashes of Pillow resizes as MusePose's users compute them (Pillow 10.4.0), for
tests/musepose/test_resize_parity.py.

Run once, in a throwaway environment that has exactly Pillow 10.4.0 and numpy (nothing of this project is
imported, so no other package is needed):

    python3.11 -m venv /tmp/pil10 && /tmp/pil10/bin/pip install pillow==10.4.0 numpy
    /tmp/pil10/bin/python tools/resize_fixtures.py tests/data/resize_pillow_10_4.json

Each case is a synthetic RGB source (``source_image``: integer arithmetic only, so every numpy version gives
the same bytes) resized with a plain ``Image.resize(size, filter)``, the call upstream makes. The file keeps
the sha256 of each result and a few checksums (per-channel sums and a corner pixel) that say how far a
mismatch is off; the test recomputes the same sources and compares.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

PILLOW_VERSION = "10.4.0"
FILTERS = {"lanczos": Image.LANCZOS, "bicubic": Image.BICUBIC}
# (source W, H) -> (target W, H). Portrait, landscape, square and odd sources from 64 px to 4K, down- and
# upscaling, aspect kept and aspect changed (MusePose squashes to W x H), the CLIP input 224 x 224 and the
# generation sizes MusePose uses. Cases where the height loses more than twice as many pixels as the width
# are those Pillow 13 computes in the other pass order.
CASES = (
    ((1080, 1920), (768, 768)),
    ((1080, 1920), (512, 320)),
    ((1080, 1920), (224, 224)),
    ((1080, 1920), (432, 768)),
    ((1920, 1080), (768, 432)),
    ((1920, 1080), (768, 768)),
    ((1920, 1080), (224, 224)),
    ((3840, 2160), (768, 432)),
    ((3840, 2160), (512, 512)),
    ((2160, 3840), (576, 768)),
    ((2160, 3840), (640, 320)),
    ((512, 512), (768, 768)),
    ((512, 512), (496, 64)),
    ((577, 769), (224, 224)),
    ((300, 900), (224, 224)),
    ((577, 769), (333, 127)),
    ((576, 768), (64, 64)),
    ((576, 768), (512, 320)),
    ((576, 768), (96, 64)),
    ((384, 512), (64, 80)),
    ((384, 512), (1080, 1920)),
    ((97, 61), (576, 768)),
    ((97, 61), (128, 17)),
    ((64, 48), (40, 64)),
    ((720, 1280), (1024, 576)),
)


def case_name(source: tuple[int, int], target: tuple[int, int], filter_name: str) -> str:
    return f"{source[0]}x{source[1]}-{target[0]}x{target[1]}-{filter_name}"


def source_image(width: int, height: int) -> Image.Image:
    """A deterministic RGB image with what separates resampling implementations: per-pixel noise (every
    rounding shows), smooth ramps, and flat blocks with hard edges (the filters' overshoot gets clipped),
    arranged differently in each channel. uint32 arithmetic wraps modulo 2**32 in every numpy version."""
    x = np.arange(width, dtype=np.uint32)
    y = np.arange(height, dtype=np.uint32)
    value = x[None, :] * np.uint32(0x9E3779B1) + y[:, None] * np.uint32(0x85EBCA77)
    value = (value ^ (value >> np.uint32(15))) * np.uint32(0x2C1B3C6D)
    value = (value ^ (value >> np.uint32(12))) * np.uint32(0x297A2D39)
    noise = (value >> np.uint32(24)).astype(np.uint8)
    ramp = (x * 255 // max(width - 1, 1)).astype(np.uint8)[None, :] + (y * 128 // height).astype(np.uint8)[
        :, None
    ]
    cells = (x * 7 // width).astype(np.uint8)[None, :] + (y * 5 // height).astype(np.uint8)[:, None]
    blocks = (cells % 2) * np.uint8(255)
    band = ((x * 2 // width).astype(np.uint8)[None, :] + (y * 3 // height).astype(np.uint8)[:, None]) % 3
    layers = [noise, ramp, blocks]
    channels = [
        np.where(band == 0, layers[shift], np.where(band == 1, layers[shift - 1], layers[shift - 2]))
        for shift in range(3)
    ]
    return Image.fromarray(np.stack(channels, axis=-1), "RGB")


def checksums(image: Image.Image) -> dict:
    pixels = np.asarray(image)
    return {
        "sha256": hashlib.sha256(pixels.tobytes()).hexdigest(),
        "channel_sums": [int(value) for value in pixels.reshape(-1, 3).sum(axis=0, dtype=np.int64)],
        "corner": [int(value) for value in pixels[0, 0]],
    }


def main(destination: str) -> None:
    import PIL

    if PIL.__version__ != PILLOW_VERSION:
        raise SystemExit(f"Run this with Pillow {PILLOW_VERSION} (found {PIL.__version__}).")
    results = {}
    for source, target in CASES:
        image = source_image(*source)
        for filter_name, resample in FILTERS.items():
            results[case_name(source, target, filter_name)] = checksums(image.resize(target, resample))
    document = {"pillow": PILLOW_VERSION, "numpy": np.__version__, "cases": results}
    Path(destination).write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
