"""pose_align against ../shared/golden/pose_align: upstream's scales, aligned keypoints and rendered
frames, from upstream's own DWPose dicts."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import cv2
import numpy as np
import pytest

from predictors.common.dwpose import Pose, render_pose
from predictors.common.dwpose.render import HAND_EDGES, LIMBS, length_width
from predictors.common.video import VideoWriter, probe
from predictors.musepose.pose_align import align_poses, output_size, render_frames
from tests import mp4

pytestmark = pytest.mark.golden

# OpenCV 5 clips primitives that reach past the canvas differently from the OpenCV 4.8 that drew the golden
# canvases: the clipped part is re-rasterised from rounded end points, so its pixels may move by one. Every
# pixel off such a primitive must be equal; on it (within that one pixel), a difference is accepted, wherever
# on the canvas it lies.
CLIP_SHIFT = 1


@pytest.fixture(scope="module")
def golden(golden_dir):
    folder = golden_dir / "pose_align"
    dicts = json.loads((folder / "inputs/pose_dicts.json").read_text())
    expected = {
        name: np.load(folder / f"expected/aligned_{name}.npy")
        for name in ("body", "subset", "hands", "faces")
    }
    summary = json.loads((folder / "expected/summary.json").read_text())
    meta = json.loads((folder / "inputs/meta.json").read_text())
    summary["ref_size"] = (meta["reference_image"]["width"], meta["reference_image"]["height"])
    summary["video_size"] = (meta["dance_video"]["width"], meta["dance_video"]["height"])
    return (
        folder,
        Pose.from_dict(dicts["reference"]),
        [Pose.from_dict(f) for f in dicts["frames"]],
        expected,
        summary,
    )


@pytest.fixture(scope="module", params=[True, False], ids=["parity", "fixed"])
def aligned(request, golden):
    _, reference, frames, _, summary = golden
    sizes = summary["ref_size"], summary["video_size"]
    result = align_poses(reference, frames, *sizes, parity=request.param)
    if not request.param:
        # The fixed mode equals upstream only where upstream's bugs do not bite: one person, and every
        # scale measurable from visible, non-degenerate bones (then both modes compute the same scales).
        upstream = align_poses(reference, frames, *sizes, parity=True)
        if result.scales != upstream.scales or any(pose.people > 1 for pose in [reference, *frames]):
            pytest.skip("upstream's bugs apply to this golden set; the fixed mode differs from it on purpose")
    return request.param, result


def _read_rgb(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def clipped_primitives(pose: Pose, height: int, width: int) -> np.ndarray:
    """bool [height, width]: the pixels of every primitive the musepose style draws for ``pose`` that
    reaches past the canvas, widened by ``CLIP_SHIFT``. Restates the geometry of ``render_pose``: limbs are
    ellipse polygons, body points circles of radius 4, hand edges lines (skipped when an end has x or y <= 0),
    hand points circles of radius 3."""
    mask = np.zeros((height, width), np.uint8)

    def outside(xs, ys, reach) -> bool:
        return (
            min(xs) - reach < 0
            or min(ys) - reach < 0
            or max(xs) + reach > width - 1
            or max(ys) + reach > height - 1
        )

    candidate, subset = pose.candidate[:18], pose.subset[:1]
    for pair in LIMBS:
        rows = subset[0][list(pair)]
        if -1 in rows:
            continue
        xs = candidate[rows.astype(int), 0] * float(width)
        ys = candidate[rows.astype(int), 1] * float(height)
        length = ((ys[0] - ys[1]) ** 2 + (xs[0] - xs[1]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
        polygon = cv2.ellipse2Poly(
            (int(np.mean(xs)), int(np.mean(ys))),
            (int(length / 2), length_width(length)),
            int(angle),
            0,
            360,
            1,
        )
        if outside(polygon[:, 0], polygon[:, 1], 0):
            cv2.fillConvexPoly(mask, polygon, 1)
    for row in subset[0]:
        if row != -1:
            x, y = (int(v) for v in candidate[int(row)] * [width, height])
            if outside([x], [y], 4):
                cv2.circle(mask, (x, y), 4, 1, thickness=-1)
    for hand in pose.person_hands(0):
        pixels = [(int(x * width), int(y * height)) for x, y in hand]
        for a, b in HAND_EDGES:
            (x1, y1), (x2, y2) = pixels[a], pixels[b]
            thickness = length_width(((x1 - x2) ** 2 + (y1 - y2) ** 2) ** 0.5)
            if min(x1, y1, x2, y2) > 0 and outside([x1, x2], [y1, y2], thickness):
                cv2.line(mask, (x1, y1), (x2, y2), 1, thickness=thickness)
        for x, y in pixels:
            if x > 0 and y > 0 and outside([x], [y], 3):
                cv2.circle(mask, (x, y), 3, 1, thickness=-1)
    size = 2 * CLIP_SHIFT + 1
    return cv2.dilate(mask, np.ones((size, size), np.uint8)).astype(bool)


def assert_equal_off_clipped_primitives(ours: np.ndarray, theirs: np.ndarray, allowed: np.ndarray) -> None:
    assert ours.shape == theirs.shape
    differing = (ours != theirs).any(axis=-1)
    stray = differing & ~allowed
    assert not stray.any(), f"{int(stray.sum())} pixels differ off the primitives that leave the canvas"


def resized_footprint(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The output pixels of a bilinear resize to ``size`` that read any pixel of ``mask``."""
    return cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_LINEAR) > 0


def test_scales_and_offset(golden, aligned):
    _, _, _, _, summary = golden
    _, result = aligned
    assert result.scales.keys() == summary["scales"].keys()
    for name, value in summary["scales"].items():
        assert result.scales[name] == pytest.approx(value, rel=1e-9), name
    np.testing.assert_allclose(result.offset, summary["offset_height_normalised"], atol=1e-12)


def test_aligned_keypoints(golden, aligned):
    _, _, frames, expected, _ = golden
    _, result = aligned
    assert len(result.poses) == len(frames)
    body = np.stack([p.candidate for p in result.poses])
    hands = np.stack([p.hands for p in result.poses])
    faces = np.stack([p.faces for p in result.poses])
    np.testing.assert_array_equal(np.stack([p.subset for p in result.poses]), expected["subset"])
    np.testing.assert_allclose(body, expected["body"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(faces, expected["faces"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(hands, expected["hands"], atol=1e-6, rtol=0)


def test_rendered_frames(golden, aligned):
    folder, _, _, _, summary = golden
    _, result = aligned
    size = output_size(summary["ref_size"])
    assert size == tuple(summary["output_frame_wh"])
    height, width = summary["draw_canvas_hw"]
    for index, (pose, frame) in enumerate(zip(result.poses, render_frames(result), strict=True)):
        allowed = resized_footprint(clipped_primitives(pose, height, width), size)
        theirs = _read_rgb(folder / f"expected/video_frames/{index:03d}.png")
        assert_equal_off_clipped_primitives(frame, theirs, allowed)


def test_canvas_as_drawn_and_palette(golden, aligned):
    """Canvases before the colour swap match the golden drawing; after it, the neck limbs are blue and the
    hand dots red, as in MusePose's training renders."""
    folder, _, _, _, summary = golden
    _, result = aligned
    height, width = summary["draw_canvas_hw"]
    for index, pose in enumerate(result.poses):
        canvas = render_pose(pose, height, width, style="musepose")
        as_drawn = _read_rgb(folder / f"expected/canvas_as_drawn/{index:03d}.png")
        assert_equal_off_clipped_primitives(
            canvas[..., ::-1], as_drawn, clipped_primitives(pose, height, width)
        )
    # Standard OpenPose draws a red nose and blue hand dots; MusePose's renders have them swapped.
    with_nose = next(pose for pose in result.poses if pose.subset[0, 0] != -1)
    with_wrist = next(pose for pose in result.poses if (pose.hands[0, 0] != -1).all())
    assert colour_at(with_nose, with_nose.candidate[0], height, width) == (0, 0, 255)
    assert colour_at(with_wrist, with_wrist.hands[0, 0], height, width) == (255, 0, 0)


def colour_at(pose, point, height, width) -> tuple[int, ...]:
    canvas = render_pose(pose, height, width, style="musepose")
    x, y = (point * [width, height]).astype(int)
    return tuple(int(value) for value in canvas[y, x])


def test_pose_video(golden, tmp_path):
    """The aligned pose video: upstream's size, frame count, rate, codec and pixel format exactly, and frames
    as close to the rendered ones as upstream's encode settings would bring them back (libx264 crf 23,
    x264's default the moviepy writer keeps, preset medium, yuv420p)."""
    folder, reference, frames, _, summary = golden
    result = align_poses(reference, frames, summary["ref_size"], summary["video_size"])
    info = probe(folder / "inputs/dance.mp4")
    handed = np.stack(list(render_frames(result)))
    out = tmp_path / "aligned_pose.mp4"
    with VideoWriter(out, info.fps) as writer:
        for frame in handed:
            writer.write(frame)
    want = summary["output_video"]
    decoded, facts = mp4.read(out)
    assert facts["size"] == (want["width"], want["height"]) and facts["frames"] == want["frames"]
    assert facts["fps"] == Fraction(want["average_rate"]) and facts["codec"] == (
        want["codec"],
        want["pix_fmt"],
    )
    _, theirs = mp4.read(folder / "expected/aligned_pose.mp4")
    assert {key: theirs[key] for key in ("size", "frames", "fps", "codec")} == {
        key: facts[key] for key in ("size", "frames", "fps", "codec")
    }
    reference_encode = mp4.reencode(
        handed, info.fps, tmp_path / "upstream_settings.mp4", {"crf": "23", "preset": "medium"}
    )
    mp4.assert_within_reencoding(decoded, handed, reference_encode)
