"""Write ``examples/style.png``: a procedural painting of swirling brush strokes (deterministic from a seed).

Strokes follow a smooth flow field (a sum of a few random sinusoids, like wind over a night sky), in a small
palette of blues and yellows, on a painted background wash, then get a faint canvas grain. The image is the
project's own work, so it is free to redistribute with the repository.

    python -m tools.make_example_style [--out examples/style.png] [--size 512] [--seed 7]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

PALETTE = np.array(
    [
        (16, 38, 94),
        (28, 72, 140),
        (60, 110, 170),
        (110, 160, 200),
        (230, 200, 80),
        (245, 225, 140),
        (20, 24, 40),
        (200, 120, 40),
    ],
    dtype=np.float64,
)
# Blues dominate, yellow and orange strokes are accents.
PALETTE_WEIGHTS = np.array([0.2, 0.22, 0.18, 0.12, 0.1, 0.06, 0.07, 0.05])


def flow_angle(x: np.ndarray, y: np.ndarray, waves: np.ndarray) -> np.ndarray:
    """Stroke direction at (x, y) in 0..1: a smooth field from a handful of sinusoids."""
    angle = np.zeros_like(x)
    for fx, fy, phase, amplitude in waves:
        angle += amplitude * np.sin(2 * math.pi * (fx * x + fy * y) + phase)
    return angle


def paint(size: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    waves = np.column_stack(
        [
            rng.uniform(0.5, 2.5, 6),
            rng.uniform(0.5, 2.5, 6),
            rng.uniform(0, 2 * math.pi, 6),
            rng.uniform(0.4, 1.2, 6),
        ]
    )
    # Background wash: a vertical gradient from deep blue to a lighter horizon.
    rows = np.linspace(0, 1, size)[:, None, None]
    wash = PALETTE[0] * (1 - rows) + PALETTE[3] * rows
    canvas = Image.fromarray(np.repeat(wash, size, axis=1).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for layer, (count, width, length) in enumerate(((900, 14, 40), (1800, 8, 26), (2600, 4, 16))):
        for _ in range(count):
            x, y = rng.uniform(0, 1, 2)
            colour = PALETTE[rng.choice(len(PALETTE), p=PALETTE_WEIGHTS)]
            colour = np.clip(colour + rng.normal(0, 12 + 4 * layer, 3), 0, 255)
            points = [(x * size, y * size)]
            for _ in range(int(length * rng.uniform(0.6, 1.4)) // 4):
                angle = flow_angle(np.array([x]), np.array([y]), waves)[0]
                x += math.cos(angle) * 4 / size
                y += math.sin(angle) * 4 / size
                points.append((x * size, y * size))
            stroke_width = max(1, int(width * rng.uniform(0.6, 1.3)))
            draw.line(points, fill=tuple(int(c) for c in colour), width=stroke_width, joint="curve")
    canvas = canvas.filter(ImageFilter.GaussianBlur(0.6))
    grain = rng.normal(0, 5, (size, size, 1))
    pixels = np.clip(np.asarray(canvas, dtype=np.float64) + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("examples/style.png"))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    paint(args.size, args.seed).save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
